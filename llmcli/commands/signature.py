"""Options declared once and added to a command's signature: Typer sees each option, the command one object.

`with_options(params, into=..., build=...)` is the mechanism behind `@decoding_options` (the flag table)
and `@model_options` (which model, and how to load it).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any


def option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def with_options(params: list[inspect.Parameter], *, into: str, build: Callable[[dict[str, Any]], Any]) -> Callable:
    """A decorator: the command's parameter `into` is replaced by `params`, whose values `build` combines."""

    def wrap(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
        own = [p for p in own if p.name != into]
        names = [p.name for p in params]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return command(**{into: build(values)}, **kwargs)

        merged = own + params
        # Typer reads the signature; positional-or-keyword parameters must come before keyword-only ones.
        merged.sort(key=lambda p: p.kind)
        run.__signature__ = signature.replace(parameters=merged)
        run.__annotations__ = {p.name: p.annotation for p in merged}
        del run.__wrapped__
        return run

    return wrap
