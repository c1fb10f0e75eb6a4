"""Structured output's compiled grammars, kept by the server for the requests that ask for the same one again."""

from __future__ import annotations

from typing import Any


class Grammars:
    """Structured output's compiled grammars, kept for the requests that ask for the same one again."""

    LIMIT = 32

    def __init__(self) -> None:
        self.compiled: dict[tuple, Any] = {}

    def get(self, loaded: Any, constraint: Any, kwargs: dict[str, Any]) -> Any:
        from llmcli.engine.generate.constraints import compile_for, parse

        key = (id(loaded), constraint.kind, constraint.source, repr(kwargs.get("eos_token_id")))
        if key not in self.compiled:
            if len(self.compiled) >= self.LIMIT:
                self.compiled.pop(next(iter(self.compiled)))
            self.compiled[key] = compile_for(loaded, constraint, parse(constraint), kwargs)
        return self.compiled[key]
