"""`llmcli generate`: flags map one-to-one onto transformers' generate(); fit for pipes and scripts."""

from __future__ import annotations

import typer

from llmcli.commands.options import (
    H_MODEL,
    H_OUT,
    AttnOpt,
    CompileOpt,
    DeviceOpt,
    DtypeOpt,
    FileOpt,
    JsonOpt,
    ModelOpt,
    QuantizeOpt,
    RawOpt,
    RevisionOpt,
    SystemOpt,
    ThreadsOpt,
    TrustOpt,
)
from llmcli.errors import Interrupted, UsageError

H_DEC = "Decoding (forwarded to generate() only when set)"


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


def generate(
    prompt: str = typer.Argument(None, help="The prompt; '-' reads stdin. Piped stdin is put before it."),
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    quantize: QuantizeOpt = "none",
    compile_: CompileOpt = False,
    attn: AttnOpt = "auto",
    threads: ThreadsOpt = None,
    adapter: str = typer.Option(
        None, "--adapter", help="A PEFT LoRA adapter directory to apply (through peft).", rich_help_panel=H_MODEL
    ),
    merge: bool = typer.Option(
        False, "--merge", help="Merge the adapter into the weights before generating.", rich_help_panel=H_MODEL
    ),
    allow_pickle: bool = typer.Option(
        False,
        "--allow-pickle",
        help="Allow .bin (pickle) weights, which can run code when loaded.",
        rich_help_panel=H_MODEL,
    ),
    memory_check: bool = typer.Option(
        True,
        "--memory-check/--no-memory-check",
        help="Refuse models whose weights exceed free device memory.",
        rich_help_panel=H_MODEL,
    ),
    max_new_tokens: int = typer.Option(
        None, "--max-new-tokens", "-n", rich_help_panel=H_DEC, help="Most tokens to generate."
    ),
    min_new_tokens: int = typer.Option(None, "--min-new-tokens", rich_help_panel=H_DEC),
    temperature: float = typer.Option(
        None,
        "--temperature",
        "-t",
        rich_help_panel=H_DEC,
        help="Softmax temperature; turns sampling on (0 means greedy).",
    ),
    top_p: float = typer.Option(None, "--top-p", rich_help_panel=H_DEC, help="Nucleus sampling mass (0, 1]."),
    top_k: int = typer.Option(None, "--top-k", rich_help_panel=H_DEC, help="Sample among the k most likely."),
    min_p: float = typer.Option(None, "--min-p", rich_help_panel=H_DEC),
    typical_p: float = typer.Option(None, "--typical-p", rich_help_panel=H_DEC),
    do_sample: bool = typer.Option(
        None,
        "--do-sample/--greedy",
        rich_help_panel=H_DEC,
        help="Force sampling or greedy decoding (default: the model's).",
    ),
    num_beams: int = typer.Option(None, "--num-beams", rich_help_panel=H_DEC),
    length_penalty: float = typer.Option(None, "--length-penalty", rich_help_panel=H_DEC),
    early_stopping: str = typer.Option(
        None, "--early-stopping", rich_help_panel=H_DEC, help="Beam search: true, false or never."
    ),
    repetition_penalty: float = typer.Option(None, "--repetition-penalty", rich_help_panel=H_DEC),
    no_repeat_ngram_size: int = typer.Option(None, "--no-repeat-ngram-size", rich_help_panel=H_DEC),
    num_return_sequences: int = typer.Option(None, "--num-return-sequences", rich_help_panel=H_DEC),
    stop: list[str] = typer.Option(
        None, "--stop", rich_help_panel=H_DEC, help="Stop string (repeatable); the output ends before it."
    ),
    seed: int = typer.Option(
        None, "--seed", rich_help_panel=H_DEC, help="Random seed (sampling always runs under one; --json reports it)."
    ),
    set_: list[str] = typer.Option(
        None, "--set", rich_help_panel=H_DEC, help="Any other GenerationConfig field, key=value (value parsed as JSON)."
    ),
    show_config: bool = typer.Option(
        False,
        "--show-config",
        rich_help_panel=H_DEC,
        help="Print the effective generation config and exit (no weights loaded).",
    ),
    system: SystemOpt = None,
    raw: RawOpt = False,
    file: FileOpt = None,
    each_line: bool = typer.Option(
        False, "--each-line", rich_help_panel=H_OUT, help="Every stdin line is a prompt (batched)."
    ),
    prompts_file: str = typer.Option(
        None, "--prompts", rich_help_panel=H_OUT, help='File with one prompt per line, or JSONL {"prompt": ...}.'
    ),
    batch_size: int = typer.Option(
        8, "--batch-size", min=1, rich_help_panel=H_OUT, help="Prompts per batch on the device."
    ),
    json_out: JsonOpt = False,
    logprobs: int = typer.Option(
        None,
        "--logprobs",
        min=0,
        rich_help_panel=H_OUT,
        help="Log-probability of every generated token and its top N alternatives (in --json; colours the "
        "streamed text on a terminal).",
    ),
    stats: bool = typer.Option(False, "--stats", rich_help_panel=H_OUT, help="Timing and memory figures on stderr."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", rich_help_panel=H_OUT, help="Stats, plus transformers' own warnings."
    ),
) -> None:
    """Generate text; every decoding flag maps straight onto transformers' generate()."""
    from llmcli import output
    from llmcli.genargs import DecodingFlags, build_generate_kwargs, effective_config, needs_sampling
    from llmcli.modelfs.tokenizer import generation_defaults

    flags = DecodingFlags(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        typical_p=typical_p,
        do_sample=do_sample,
        num_beams=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        num_return_sequences=num_return_sequences,
        stop=list(stop or []),
        extra=list(set_ or []),
        compile=compile_,
    )
    kwargs = build_generate_kwargs(flags)
    from llmcli.loader import check_speed_options

    check_speed_options(quantize, compile_)
    if verbose:
        import os

        os.environ["TRANSFORMERS_VERBOSITY"] = "info"
    batch = each_line or prompts_file is not None
    if not show_config:
        from llmcli.prompts import batch_prompts, single_prompt

        prompts = batch_prompts(each_line, prompts_file, prompt) if batch else [single_prompt(prompt, file)]
    on_tty = output.stderr_is_tty()

    from llmcli.loader import load, resolve_model

    source = resolve_model(model, verbose_progress=on_tty or verbose, revision=revision)
    defaults = generation_defaults(source.path) or {}
    effective = effective_config(defaults, kwargs)
    if show_config:
        if json_out:
            output.emit_json(
                {"model": str(source.path), "defaults": defaults, "overrides": kwargs, "effective": effective}
            )
        else:
            rows = [
                (k, repr(v) if isinstance(v, str) else str(v), "override" if k in kwargs else "model default")
                for k, v in effective.items()
            ]
            output.show(
                [output.Section(f"Effective generation config ({source.label})", [output.KV(rows)])],
                output.choose_mode(False),
            )
        return

    from llmcli.runner import GenerationInterrupted, generate_batch, pick_seed

    seed_used = pick_seed(seed, needs_sampling(kwargs, defaults))
    adapter_ref = None
    if adapter is not None:
        from llmcli.modelfs.locate import locate

        adapter_ref = locate(adapter)
        if adapter_ref.kind != "adapter":
            raise UsageError(f"--adapter {adapter}: not a PEFT adapter directory (no adapter_config.json)")
    elif merge:
        raise UsageError("--merge goes with --adapter")
    loaded = load(
        source,
        device,
        dtype,
        trust_remote_code,
        allow_pickle,
        memory_check,
        show_progress=on_tty,
        quantize=quantize,
        adapter=adapter_ref.path if adapter_ref else None,
        merge=merge,
        attn=attn,
        threads=threads,
    )
    model_info = loaded.describe()
    if adapter_ref is not None:
        model_info["adapter"] = {"path": str(adapter_ref.path), "merged": merge}
    stream = None if json_out else (lambda text: output.write_stdout(text, flush=True))
    colorize = output.confidence_writer() if (logprobs is not None and output.choose_mode(json_out) == "rich") else None
    results = []
    try:
        for start in range(0, len(prompts), batch_size if batch else 1):
            chunk = prompts[start : start + (batch_size if batch else 1)]
            done = generate_batch(
                loaded, chunk, kwargs, seed_used, system, raw, stream if not batch else None, logprobs, colorize
            )
            results.extend(done)
            for result in done:
                _print_result(
                    result,
                    model_info,
                    json_out,
                    streamed=stream is not None and not batch,
                    separate=batch or len(result.outputs) > 1,
                )
    except GenerationInterrupted as exc:
        for result in exc.results:
            if json_out:
                output.emit_json(result.as_json(model_info) | {"interrupted": True})
        if not json_out:
            output.write_stdout("\n", flush=True)
        raise Interrupted() from None
    except KeyboardInterrupt:
        raise Interrupted() from None
    if (stats or verbose) and results:
        output.print_stats(results[-1].stats)


def _print_result(result, model_info, json_out: bool, streamed: bool, separate: bool) -> None:
    from llmcli import output

    if json_out:
        output.emit_json(result.as_json(model_info))
        return
    if streamed:
        output.write_stdout("\n", flush=True)
        return
    for out in result.outputs:
        output.write_stdout(out.text + ("\n\n" if separate else "\n"), flush=True)
