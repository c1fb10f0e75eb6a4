"""`llmcli bench`: load time, time to first token, prefill and decode speed, batch throughput, peak memory."""

from __future__ import annotations

import typer

from llmcli.commands import options as opt
from llmcli.commands.model_options import ModelArgs, model_options


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _ints(text: str, flag: str) -> list[int]:
    from llmcli.errors import UsageError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated whole numbers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{flag} takes whole numbers ≥ 1, got {text!r}")
    return values


def _warm_up_raw(source, spec) -> None:
    """The first load in a process pays for importing the model's modules: take it out of both figures."""
    from llmcli.analysis.bench import load_raw
    from llmcli.engine.load.devices import resolve_device, resolve_dtype
    from llmcli.modelfs.config import load_config

    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    dev = resolve_device(spec.device)
    load_raw(str(source.path), resolve_dtype(spec.dtype, dev, load_config(source.path)), dev)


@model_options("model", "device", "dtype", "quantize", "compile", "attn", "threads")
def bench(
    prompt_lengths: str = typer.Option("32", "--prompt-lengths", "-p", help="Prompt lengths in tokens, e.g. 32,512."),
    gen_lengths: str = typer.Option("64", "--gen-lengths", "-g", help="Tokens to generate, e.g. 32,128."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", "-b", help="Batch sizes, e.g. 1,8."),
    reps: int = typer.Option(3, "--reps", "-r", min=1, help="Measured repetitions (median and min–max reported)."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Unmeasured runs first."),
    compare_raw: bool = typer.Option(
        False,
        "--compare-raw",
        help="Also time a bare transformers generate() on the "
        "same inputs in this process, and print llmcli/raw ratios.",
    ),
    json_out: opt.JsonOpt = False,
    *,
    model_args: ModelArgs,
) -> None:
    """Measure llmcli's generation speed, like llama-bench; --compare-raw puts a bare generate() beside it."""
    from llmcli import output
    from llmcli.genargs import DecodingFlags, build_generate_kwargs
    from llmcli.plan import check_combinations
    from llmcli.reports import bench as bench_report

    grid = dict(
        prompt_lengths=_ints(prompt_lengths, "--prompt-lengths"),
        gen_lengths=_ints(gen_lengths, "--gen-lengths"),
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        reps=reps,
        warmup=warmup,
    )
    gen_kwargs = build_generate_kwargs(DecodingFlags(compile=model_args.compile))
    spec = model_args.spec()
    on_tty = spec.show_progress
    check_combinations(spec=spec, kwargs=gen_kwargs)
    from llmcli.analysis.bench import Grid, load_raw
    from llmcli.analysis.bench import bench as run
    from llmcli.engine.load.loader import load

    source = model_args.source(verbose=on_tty)
    if compare_raw:
        _warm_up_raw(source, spec)
    loaded = load(source, spec)
    report = {
        "model": loaded.describe(),
        "settings": {
            "reps": reps,
            "warmup": warmup,
            "threads": spec.threads,
            "decoding": "greedy",
            "compile": model_args.compile,
            "generate_kwargs": gen_kwargs,
        },
        "load_seconds": {"llmcli": loaded.load_seconds},
    }
    if compare_raw:
        report["load_seconds"]["raw"] = load_raw(
            str(source.path), loaded.dtype, loaded.device, loaded.quantize, spec.attn
        )
        report["load_seconds"]["ratio"] = loaded.load_seconds / report["load_seconds"]["raw"]
    progress = output.warn if on_tty else (lambda _m: None)
    report.update(run(loaded, Grid(**grid), compare_raw=compare_raw, progress=progress, gen_kwargs=gen_kwargs))
    import torch

    report["settings"]["threads"] = torch.get_num_threads()
    output.present(bench_report.build(report, compare_raw=compare_raw), json=json_out)
