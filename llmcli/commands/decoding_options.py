"""Typer options derived from the flag table (`llmcli.flags.FLAGS`).

A command decorated with `@decoding_options(...)` declares a `decoding: DecodingFlags` parameter and gets
one option per selected flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from llmcli.commands.options import H_DEC
from llmcli.commands.signature import option, with_options
from llmcli.flags import FLAGS, Flag


def _parameter(flag: Flag, panel: str | None):
    annotation: Any = list[str] if flag.type is list else flag.type
    info = typer.Option(*flag.names, help=flag.help, rich_help_panel=panel)
    return option(flag.key, Annotated[annotation | None, info], None)


def _decoding_flags(values: dict[str, Any]) -> Any:
    from llmcli.genargs import DecodingFlags

    return DecodingFlags(**values)


def decoding_options(keys: Iterable[str] | None = None, *, panel: str | None = H_DEC) -> Callable:
    """Adds the options of the flags named by `keys` (default: all) and passes `decoding=DecodingFlags(...)`."""
    wanted = None if keys is None else set(keys)
    params = [_parameter(f, panel) for f in FLAGS if wanted is None or f.key in wanted]
    return with_options(params, into="decoding", build=_decoding_flags)
