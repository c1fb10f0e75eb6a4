"""`llmcli lens`: the logit lens, layer by layer, in one forward pass."""

from __future__ import annotations

import typer

from llmcli.commands.model_options import PLACEMENT, ModelArgs, model_options
from llmcli.commands.prompt_options import ONE_PASS, PromptArgs, prompt_options

LOADING = ("model", "revision", "device", *PLACEMENT, "dtype", "quantize", "trust_remote_code", "adapter", "merge")


def register(app: typer.Typer) -> None:
    app.command("lens")(lens)


@model_options(*LOADING)
@prompt_options(*ONE_PASS)
def lens(
    prompt: str = typer.Argument(None, help="The prompt; '-' or piped stdin reads stdin."),
    position: int = typer.Option(
        -1, "--position", help="The position read in depth and whose attention is shown (0-based; -1: the last)."
    ),
    positions: str = typer.Option(
        None, "--positions", help="A grid of top tokens per layer and position: all, START:END or 0,3,5."
    ),
    track: str = typer.Option(
        None, "--track", help="One token (e.g. ' Paris') whose probability and rank are shown at every layer."
    ),
    attention: bool = typer.Option(
        False, "--attention", help="Each layer's and head's most-attended earlier tokens (eager attention)."
    ),
    top: int = typer.Option(5, "--top", min=1, max=100, help="Top tokens kept per layer (and keys per head)."),
    *,
    model_args: ModelArgs,
    prompt_args: PromptArgs,
) -> None:
    """What every layer would predict: the residual stream read through the model's own final norm and LM head."""
    from llmcli import output
    from llmcli.errors import UsageError
    from llmcli.plan import check_combinations
    from llmcli.reports import lens as report

    if prompt_args.server is not None:
        raise UsageError("--server: lens needs the model's hidden states, which a server does not return")
    prompt_args.check()
    view = report.LensView(position=position, positions=positions, track=track, attention=attention)
    spec = model_args.with_adapter(model_args.spec(prefill_only=True))
    check_combinations(spec=spec)
    text = prompt_args.text(prompt)
    from llmcli.analysis.lens import lens_record
    from llmcli.engine.load.loader import load

    loaded = load(model_args.source(verbose=spec.show_progress), spec)
    data = lens_record(loaded, text, chat=prompt_args.chat, system=prompt_args.system, view=view, top=top)
    output.present(report.lens(data), json=prompt_args.json_out)
