"""`llmcli next-token` and `llmcli score`: the model's distribution over the next token, and text likelihood."""

from __future__ import annotations

import typer

from llmcli.commands.decoding_options import decoding_options
from llmcli.commands.options import (
    DeviceOpt,
    DtypeOpt,
    FileOpt,
    JsonOpt,
    ModelOpt,
    RawOpt,
    RevisionOpt,
    SystemOpt,
    TrustOpt,
)
from llmcli.flags import SAMPLING_KEYS
from llmcli.genargs import DecodingFlags
from llmcli.plan import Dtype


def register(app: typer.Typer) -> None:
    app.command("next-token")(next_token)
    app.command("score")(score)


def _load(model, revision, *, device, dtype, trust_remote_code):
    from llmcli import output
    from llmcli.engine.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import LoadSpec, check_combinations

    on_tty = output.stderr_is_tty()
    # One pass over the prompt, no decoding loop: the CPU default is float32 (see loader.resolve_dtype).
    spec = LoadSpec(
        device=device, dtype=dtype, trust_remote_code=trust_remote_code, prefill_only=True, show_progress=on_tty
    )
    check_combinations(spec=spec)
    return load(resolve_model(model, revision=revision, verbose=on_tty), spec)


def _model_info(loaded) -> dict:
    return {"path": str(loaded.source.path), "dtype": loaded.dtype, "device": loaded.device}


@decoding_options(SAMPLING_KEYS, panel=None)
def next_token(
    prompt: str = typer.Argument(None, help="The prompt; '-' or piped stdin reads stdin."),
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.auto,
    top: int = typer.Option(10, "--top", min=1, max=1000, help="How many candidates to show."),
    system: SystemOpt = None,
    raw: RawOpt = False,
    file: FileOpt = None,
    trust_remote_code: TrustOpt = False,
    json_out: JsonOpt = False,
    *,
    decoding: DecodingFlags,
) -> None:
    """One forward pass: the top candidates for the next token, before and after sampling filters."""
    from llmcli import output
    from llmcli.engine.generation import encode
    from llmcli.engine.probe import next_token as compute
    from llmcli.genargs import build_generate_kwargs
    from llmcli.prompts import single_prompt
    from llmcli.reports import probe

    settings = build_generate_kwargs(decoding)
    if decoding.get("temperature") == 0:
        settings["temperature"] = 0
    settings = {k: v for k, v in settings.items() if k in SAMPLING_KEYS}
    text = single_prompt(prompt, file)
    loaded = _load(model, revision, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    ids = encode(loaded.tokenizer, text, system=system, raw=raw)
    data = {"model": _model_info(loaded), "prompt": text, **compute(loaded.model, loaded.tokenizer, ids, settings, top)}
    output.present(probe.next_token(data), json=json_out)


def score(
    text: str = typer.Argument(None, help="Text to score; '-' or piped stdin reads stdin."),
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.auto,
    file: FileOpt = None,
    trust_remote_code: TrustOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Per-token log-likelihood of a text under the model, and its perplexity (exp of the mean NLL)."""
    from llmcli import output
    from llmcli.engine.generation import model_context
    from llmcli.engine.probe import score as compute
    from llmcli.errors import LlmcliError
    from llmcli.prompts import single_prompt
    from llmcli.reports import probe

    body = single_prompt(text, file)
    loaded = _load(model, revision, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    ids = list(loaded.tokenizer(body, add_special_tokens=True)["input_ids"])
    context = model_context(loaded.config)
    if context and len(ids) > context:
        raise LlmcliError(f"the text is {len(ids):,} tokens, but the model's context is {context:,} tokens")
    data = {"model": _model_info(loaded), **compute(loaded.model, loaded.tokenizer, ids)}
    output.present(probe.score(data), json=json_out)
