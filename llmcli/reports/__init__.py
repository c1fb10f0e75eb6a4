"""Reports: what a command found, as JSON data and as display sections, built without torch at import.

Every builder returns a `Report`; the output layer's `present(report, json=...)` prints it.

Above the engine, under the analyses and commands that fill it: may import modelfs, the shared bottom modules
and, inside inspect's functions only, engine.meta (the architecture on the meta device, no weights read);
never analysis, server, client or commands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmcli.output import Section


@dataclass
class Report:
    data: dict[str, Any]  # the --json object
    sections: list[Section] = field(default_factory=list)  # what a terminal or a pipe shows


def billions(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def counted(n: int) -> str:
    return f"{n:,} ({billions(n)})"


class Decoder:
    """Token texts, each id decoded once."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._seen: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        if token_id not in self._seen:
            self._seen[token_id] = self._decode([token_id])
        return self._seen[token_id]
