"""Lines as files and HTTP streams mean them: ended by "\\n", "\\r\\n" or "\\r" and nothing else.

`str.splitlines()` and httpx's `iter_lines()` also end a line at U+2028, U+2029, U+0085 and a few control
characters, which `json.dumps(..., ensure_ascii=False)` leaves raw inside strings: a generated text or prompt
holding one would cut a JSON Lines record, a server's NDJSON answer or an SSE event in two. Every reader of
JSON Lines, prompt files and streamed answers splits here. Imports nothing of llmcli.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_END = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """The lines of `text`, without their ends; no empty last line for a text that ends with one."""
    return list(iter_lines([text]))


def iter_lines(chunks: Iterable[str]) -> Iterator[str]:
    """The lines of a text that arrives in chunks (an HTTP body), each as soon as its end has arrived."""
    held = ""
    for chunk in chunks:
        held += chunk
        pieces = _END.split(held[:-1] if held.endswith("\r") else held)  # "\r" may be half of a "\r\n"
        rest = pieces.pop()
        yield from pieces
        held = rest + ("\r" if held.endswith("\r") else "")
    if held:
        yield held.removesuffix("\r")
