"""`llmcli next-token` and `llmcli score`: the model's distribution over the next token, and text likelihood."""

from __future__ import annotations

import typer

from llmcli.commands import options as opt
from llmcli.commands.decoding_options import decoding_options
from llmcli.commands.model_options import PLACEMENT, ModelArgs, model_options
from llmcli.commands.prompt_options import ONE_PASS, PromptArgs, prompt_options
from llmcli.flags import SAMPLING_KEYS
from llmcli.genargs import DecodingFlags

LOADING = ("model", "revision", "device", *PLACEMENT, "dtype", "quantize", "trust_remote_code")


def register(app: typer.Typer) -> None:
    app.command("next-token")(next_token)
    app.command("score")(score)


def _checked_spec(model_args: ModelArgs):
    from llmcli.plan import check_combinations

    # One pass over the prompt, no decoding loop: the CPU default is float32 (see loader.resolve_dtype).
    spec = model_args.spec(prefill_only=True)
    check_combinations(spec=spec)
    return spec


def _load(model_args: ModelArgs, spec):
    from llmcli.engine.load.loader import load

    return load(model_args.source(verbose=spec.show_progress), spec)


@model_options(*LOADING)
@decoding_options(SAMPLING_KEYS, panel=None)
@prompt_options(*ONE_PASS)
def next_token(
    prompt: str = typer.Argument(None, help="The prompt; '-' or piped stdin reads stdin."),
    top: int = typer.Option(10, "--top", min=1, max=1000, help="How many candidates to show."),
    *,
    model_args: ModelArgs,
    decoding: DecodingFlags,
    prompt_args: PromptArgs,
) -> None:
    """One forward pass: the top candidates for the next token of the text, before and after sampling filters."""
    from llmcli import output
    from llmcli.genargs import sampling_settings
    from llmcli.reports import probe

    prompt_args.check()
    settings = sampling_settings(decoding)
    chat, system = prompt_args.chat, prompt_args.system
    if prompt_args.server is not None:
        data = _remote(prompt_args.server, model_args, "next-token", prompt=prompt_args.text(prompt),
                       flags=decoding.values, top=top, chat=chat, system=system)  # fmt: skip
        output.present(probe.next_token(data), json=prompt_args.json_out)
        return
    spec = _checked_spec(model_args)
    text = prompt_args.text(prompt)
    loaded = _load(model_args, spec)
    from llmcli.analysis.probe import next_token_record

    data = next_token_record(loaded, text, chat=chat, system=system, settings=settings, top=top)
    output.present(probe.next_token(data), json=prompt_args.json_out)


@model_options(*LOADING, "adapter", "merge")
def score(
    text: str = typer.Argument(None, help="Text to score; '-' or piped stdin reads stdin."),
    file: opt.FileOpt = None,
    window: int = typer.Option(
        None, "--window", help="Score in windows of this many tokens (default: the context, capped to memory)."
    ),
    stride: int = typer.Option(None, "--stride", help="A window starts every this many tokens (default: window/2)."),
    save_ref: str = typer.Option(
        None, "--save-ref", help="Write a reference file (top-K candidates per position) for `compare --base-ref`."
    ),
    ref_k: int = typer.Option(64, "--ref-k", min=1, max=4096, help="Candidates per position in --save-ref's file."),
    json_out: opt.JsonOpt = False,
    server: opt.ServerOpt = None,
    *,
    model_args: ModelArgs,
) -> None:
    """Per-token log-likelihood of a text under the model and its perplexity (exp of the mean NLL); a text
    longer than the context is scored in strided windows."""
    from pathlib import Path

    from llmcli import output
    from llmcli.prompts import single_prompt
    from llmcli.reports import probe
    from llmcli.scoring import check_window

    check_window(window, stride, context=None)
    if server is not None:
        extra = {k: v for k, v in (("window", window), ("stride", stride)) if v is not None}
        if save_ref is not None:
            extra |= {"save_ref": Path(save_ref), "k": ref_k}
        data = _remote(server, model_args, "score", text=single_prompt(text, file), **extra)
        output.present(probe.score(data), json=json_out)
        return
    spec = model_args.with_adapter(_checked_spec(model_args))
    body = single_prompt(text, file)
    loaded = _load(model_args, spec)
    from llmcli.analysis.perplexity import score_any

    def bar(total: int):
        return output.progress(total, "scoring windows", enabled=output.stderr_is_tty())

    ref = Path(save_ref) if save_ref is not None else None
    data = score_any(loaded, body, window=window, stride=stride, save_ref=ref, k=ref_k, progress=bar)
    output.present(probe.score(data), json=json_out)


def _remote(server: str, model_args: ModelArgs, endpoint: str, **body) -> dict:
    from llmcli import client

    model_args.refuse_local()
    return client.call(server, endpoint, {"model": model_args.model, **body})
