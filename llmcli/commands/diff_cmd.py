"""`llmcli diff A B`: base vs fine-tune, original vs quantized, two revisions — without loading weights."""

from __future__ import annotations

import typer

from llmcli.commands.completion import model_paths
from llmcli.commands.options import JsonOpt


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)


def diff(
    a: str = typer.Argument(..., help="First model: directory or .gguf file.", autocompletion=model_paths),
    b: str = typer.Argument(..., help="Second model: directory or .gguf file.", autocompletion=model_paths),
    json_out: JsonOpt = False,
) -> None:
    """Config keys that differ, tensors only in one, tensors whose dtype or shape changed, parameter totals."""
    from llmcli import output
    from llmcli.modelfs.locate import locate
    from llmcli.reports import diff as diff_report

    ra, rb = locate(a), locate(b)
    output.present(diff_report.build((ra.path, ra.kind), (rb.path, rb.kind)), json=json_out)
