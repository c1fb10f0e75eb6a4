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


def _parameter(flag: Flag, panel: str | None, taken: frozenset[str]):
    annotation: Any = list[str] if flag.type is list else flag.type
    info = typer.Option(*(n for n in flag.names if n not in taken), help=flag.help, rich_help_panel=panel)
    return option(flag.key, Annotated[annotation | None, info], None)


def _decoding_flags(values: dict[str, Any]) -> Any:
    from llmcli.genargs import DecodingFlags

    return DecodingFlags(**values)


def decoding_options(keys: Iterable[str] | None = None, *, panel: str | None = H_DEC,
                     taken: Iterable[str] = ()) -> Callable:  # fmt: skip
    """Adds the options of the flags named by `keys` (default: all) and passes `decoding=DecodingFlags(...)`;
    `taken`: option names the command gives another meaning (sample's -n), left off the flags."""
    wanted = None if keys is None else set(keys)
    params = [_parameter(f, panel, frozenset(taken)) for f in FLAGS if wanted is None or f.key in wanted]
    return with_options(params, into="decoding", build=_decoding_flags)


H_STRUCT = "Structured output (xgrammar)"
STRUCTURE = [
    option(
        "json_schema",
        Annotated[
            str | None,
            typer.Option(
                "--json-schema",
                help="Output valid for this JSON Schema (the JSON itself, or a file).",
                rich_help_panel=H_STRUCT,
            ),
        ],
        None,
    ),
    option(
        "json_object",
        Annotated[bool, typer.Option("--json-object", help="Output any valid JSON object.", rich_help_panel=H_STRUCT)],
        False,
    ),
    option(
        "regex",
        Annotated[
            str | None,
            typer.Option("--regex", help="Output matching this regular expression.", rich_help_panel=H_STRUCT),
        ],
        None,
    ),
    option(
        "grammar",
        Annotated[
            str | None,
            typer.Option(
                "--grammar", help="Output in this EBNF/GBNF grammar (a file; rule root).", rich_help_panel=H_STRUCT
            ),
        ],
        None,
    ),
]


def _constraint(values: dict[str, Any]) -> Any:
    from llmcli.plan import constraint_from

    return constraint_from(**values)


def structure_options() -> Callable:
    """Adds --json-schema, --json-object, --regex and --grammar; passes `constraint=Constraint | None`."""
    return with_options(list(STRUCTURE), into="constraint", build=_constraint)
