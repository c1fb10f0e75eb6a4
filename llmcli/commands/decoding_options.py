"""Typer options derived from the flag table (`llmcli.flags.FLAGS`), added to a command's signature.

A command decorated with `@decoding_options(...)` declares a `decoding: DecodingFlags` parameter and gets
one option per selected flag; Typer sees the options, the command sees the one object.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from llmcli.commands.options import H_DEC
from llmcli.flags import FLAGS, Flag


def _option(flag: Flag, panel: str | None) -> inspect.Parameter:
    annotation: Any = list[str] if flag.type is list else flag.type
    info = typer.Option(*flag.names, help=flag.help, rich_help_panel=panel)
    return inspect.Parameter(
        flag.key,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[annotation | None, info],
    )


def decoding_options(keys: Iterable[str] | None = None, *, panel: str | None = H_DEC) -> Callable:
    """Adds the options of the flags named by `keys` (default: all) and passes `decoding=DecodingFlags(...)`."""
    chosen = [f for f in FLAGS if keys is None or f.key in set(keys)]

    def wrap(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
        own = [p for p in own if p.name != "decoding"]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            from llmcli.genargs import DecodingFlags

            values = {f.key: kwargs.pop(f.key) for f in chosen}
            return command(decoding=DecodingFlags(**values), **kwargs)

        params = own + [_option(f, panel) for f in chosen]
        # Typer reads the signature; positional-or-keyword parameters must come before keyword-only ones.
        params.sort(key=lambda p: p.kind)
        run.__signature__ = signature.replace(parameters=params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        del run.__wrapped__
        return run

    return wrap
