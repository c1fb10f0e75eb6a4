"""`llmcli diff A B`: base vs fine-tune, original vs quantized, two revisions — without loading weights."""

from __future__ import annotations

import typer

from llmcli.commands.options import JsonOpt


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)


def diff(
    a: str = typer.Argument(..., help="First model: directory or .gguf file."),
    b: str = typer.Argument(..., help="Second model: directory or .gguf file."),
    json_out: JsonOpt = False,
) -> None:
    """Config keys that differ, tensors only in one, tensors whose dtype or shape changed, parameter totals."""
    from llmcli import output
    from llmcli.diff_report import diff_models
    from llmcli.modelfs.locate import locate

    ra, rb = locate(a), locate(b)
    data, sections = diff_models((ra.path, ra.kind), (rb.path, rb.kind))
    mode = output.choose_mode(json_out)
    if mode == "json":
        output.emit_json(data)
    else:
        output.show(sections, mode)
