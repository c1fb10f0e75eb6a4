"""`llmcli next-token` and `llmcli score`: the model's distribution over the next token, and text likelihood."""

from __future__ import annotations

import typer

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

BAR = 24


def register(app: typer.Typer) -> None:
    app.command("next-token")(next_token)
    app.command("score")(score)


def _bar(p: float) -> str:
    filled = p * BAR
    full = int(filled)
    return "█" * full + ("▌" if filled - full >= 0.5 else "")


def _load(model, device, dtype, trust_remote_code, revision=None):
    from llmcli import output
    from llmcli.loader import load, resolve_model

    on_tty = output.stderr_is_tty()
    source = resolve_model(model, verbose_progress=on_tty, revision=revision)
    # One pass over the prompt, no decoding loop: the CPU default is float32 (see loader.resolve_dtype).
    return load(
        source,
        device,
        dtype,
        trust_remote_code,
        allow_pickle=False,
        memory_check=True,
        show_progress=on_tty,
        prefill_only=True,
    )


def next_token(
    prompt: str = typer.Argument(None, help="The prompt; '-' or piped stdin reads stdin."),
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    temperature: float = typer.Option(None, "--temperature", "-t", help="Reshape: P ∝ exp(z / T)."),
    top_k: int = typer.Option(None, "--top-k", help="Keep the k most likely tokens."),
    top_p: float = typer.Option(None, "--top-p", help="Keep the smallest set whose mass reaches p."),
    min_p: float = typer.Option(None, "--min-p", help="Keep tokens with p ≥ min_p × p(top)."),
    typical_p: float = typer.Option(None, "--typical-p"),
    top: int = typer.Option(10, "--top", min=1, max=1000, help="How many candidates to show."),
    system: SystemOpt = None,
    raw: RawOpt = False,
    file: FileOpt = None,
    trust_remote_code: TrustOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """One forward pass: the top candidates for the next token, before and after sampling filters."""
    from llmcli import output
    from llmcli.genargs import DecodingFlags, build_generate_kwargs
    from llmcli.probe import FILTER_KEYS
    from llmcli.probe import next_token as compute
    from llmcli.prompts import single_prompt
    from llmcli.runner import prepare_prompt

    settings = build_generate_kwargs(
        DecodingFlags(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p)
    )
    if temperature == 0:
        settings["temperature"] = 0
    settings = {k: v for k, v in settings.items() if k in FILTER_KEYS}
    text = single_prompt(prompt, file)
    loaded = _load(model, device, dtype, trust_remote_code, revision)
    ids = prepare_prompt(loaded.tokenizer, text, system, raw)
    data = compute(loaded.model, loaded.tokenizer, ids, settings, top)
    data = {
        "model": {"path": str(loaded.source.path), "dtype": loaded.dtype, "device": loaded.device},
        "prompt": text,
        **data,
    }
    mode = output.choose_mode(json_out)
    if mode == "json":
        output.emit_json(data)
        return
    filtered = bool(data["settings"])
    columns = ["#", "token", "id", "P(T=1)", ""]
    if filtered:
        columns += ["P after", "", "kept"]
    columns.append("cumulative")
    rows = []
    for c in data["candidates"]:
        row = [str(c["rank"]), repr(c["token"]), str(c["token_id"]), f"{c['prob']:.2%}", _bar(c["prob"])]
        if filtered:
            row += [f"{c['prob_after']:.2%}", _bar(c["prob_after"]), "yes" if c["kept"] else "no"]
        row.append(f"{c['cumulative']:.2%}")
        rows.append(row)
    what = ", ".join(f"{k}={v}" for k, v in data["settings"].items()) or "none (T=1)"
    summary = f"entropy {data['entropy_bits']:.2f} bits at T=1" + (
        f", {data['entropy_bits_after']:.2f} bits after filters; {data['kept_tokens']:,} of "
        f"{data['vocab_size']:,} tokens kept"
        if filtered
        else f"; vocabulary {data['vocab_size']:,}"
    )
    numeric = {0, 2, 3} | ({5} if filtered else set()) | {len(columns) - 1}
    output.show(
        [
            output.Section(
                f"Next token after {len(ids)} prompt tokens (filters: {what})",
                [output.Table(columns, rows, numeric=numeric), output.Para(summary)],
            )
        ],
        mode,
    )


def score(
    text: str = typer.Argument(None, help="Text to score; '-' or piped stdin reads stdin."),
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    file: FileOpt = None,
    trust_remote_code: TrustOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Per-token log-likelihood of a text under the model, and its perplexity (exp of the mean NLL)."""
    import math

    from llmcli import output
    from llmcli.errors import LlmcliError
    from llmcli.probe import score as compute
    from llmcli.prompts import single_prompt
    from llmcli.runner import model_context

    body = single_prompt(text, file)
    loaded = _load(model, device, dtype, trust_remote_code, revision)
    ids = list(loaded.tokenizer(body, add_special_tokens=True)["input_ids"])
    context = model_context(loaded.config)
    if context and len(ids) > context:
        raise LlmcliError(f"the text is {len(ids):,} tokens, but the model's context is {context:,} tokens")
    data = compute(loaded.model, loaded.tokenizer, ids)
    data = {"model": {"path": str(loaded.source.path), "dtype": loaded.dtype, "device": loaded.device}, **data}
    mode = output.choose_mode(json_out)
    if mode == "json":
        output.emit_json(data)
        return
    rows = [
        [
            str(i),
            repr(t["token"]),
            str(t["token_id"]),
            "" if t["logprob"] is None else f"{t['logprob']:.3f}",
            "" if t["logprob"] is None else f"{math.exp(t['logprob']):.2%}",
        ]
        for i, t in enumerate(data["tokens"])
    ]
    summary = (
        f"{data['scored_tokens']} tokens scored: total log-likelihood {data['total_logprob']:.3f}, "
        f"mean NLL {data['mean_nll']:.4f} nats, perplexity {data['perplexity']:.3f}"
    )
    output.show(
        [
            output.Section(
                "Score",
                [output.Table(["#", "token", "id", "logprob", "P"], rows, numeric={0, 2, 3, 4}), output.Para(summary)],
            )
        ],
        mode,
    )
