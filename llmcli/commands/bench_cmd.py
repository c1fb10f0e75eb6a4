"""`llmcli bench`: load time, time to first token, prefill and decode speed, batch throughput, peak memory."""

from __future__ import annotations

import typer

from llmcli.commands.options import (
    AttnOpt,
    CompileOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    QuantizeOpt,
    ThreadsOpt,
)


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


def bench(
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    quantize: QuantizeOpt = "none",
    compile_: CompileOpt = False,
    attn: AttnOpt = "auto",
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
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Measure llmcli's generation speed, like llama-bench; --compare-raw puts a bare generate() beside it."""
    from llmcli import output
    from llmcli.bench import bench as run
    from llmcli.bench import load_raw
    from llmcli.loader import load, resolve_model

    plens, glens, bsizes = (
        _ints(prompt_lengths, "--prompt-lengths"),
        _ints(gen_lengths, "--gen-lengths"),
        _ints(batch_sizes, "--batch-sizes"),
    )
    from llmcli.loader import check_speed_options

    check_speed_options(quantize, compile_)
    on_tty = output.stderr_is_tty()
    source = resolve_model(model, verbose_progress=on_tty)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if compare_raw:
        # The first load in a process pays for importing the model's modules: take it out of both figures.
        from llmcli.loader import resolve_device, resolve_dtype
        from llmcli.modelfs.config import load_config

        dev = resolve_device(device)
        load_raw(str(source.path), resolve_dtype(dtype, dev, load_config(source.path)), dev)  # warm-up
    loaded = load(source, device, dtype, False, False, True, show_progress=on_tty, quantize=quantize, attn=attn)
    from llmcli.genargs import DecodingFlags, build_generate_kwargs

    gen_kwargs = build_generate_kwargs(DecodingFlags(compile=compile_))
    report = {
        "model": loaded.describe(),
        "settings": {
            "reps": reps,
            "warmup": warmup,
            "threads": threads,
            "decoding": "greedy",
            "compile": compile_,
            "generate_kwargs": gen_kwargs,
        },
        "load_seconds": {"llmcli": loaded.load_seconds},
    }
    if compare_raw:
        report["load_seconds"]["raw"] = load_raw(str(source.path), loaded.dtype, loaded.device, loaded.quantize, attn)
        report["load_seconds"]["ratio"] = loaded.load_seconds / report["load_seconds"]["raw"]
    report.update(
        run(
            loaded,
            plens,
            glens,
            bsizes,
            reps,
            warmup,
            compare_raw,
            output.warn if on_tty else (lambda _m: None),
            gen_kwargs,
        )
    )
    import torch

    report["settings"]["threads"] = torch.get_num_threads()
    mode = output.choose_mode(json_out)
    if mode == "json":
        output.emit_json(report)
        return
    output.show(_sections(report, compare_raw), mode)


def _fmt(entry, digits: int = 1) -> str:
    if entry is None:
        return "n/a"
    if isinstance(entry, dict):
        return f"{entry['median']:.{digits}f} ({entry['min']:.{digits}f}–{entry['max']:.{digits}f})"
    return f"{entry:.{digits}f}"


def _sections(report, compare_raw: bool):
    from llmcli import output

    columns = ["prompt", "gen", "batch", "TTFT ms", "prefill tok/s", "decode tok/s", "throughput tok/s", "peak mem"]
    if compare_raw:
        columns += ["raw decode tok/s", "decode ×", "throughput ×"]
    rows = []
    from llmcli.modelfs.memory import human_bytes

    for r in report["results"]:
        ours = r["llmcli"]
        ttft = {k: v * 1000 for k, v in ours["time_to_first_token"].items()}
        row = [
            str(r["prompt_tokens"]),
            str(r["generated_tokens"]),
            str(r["batch"]),
            _fmt(ttft, 0),
            _fmt(ours["prefill_tokens_per_second"]),
            _fmt(ours["decode_tokens_per_second"]),
            _fmt(ours["throughput_tokens_per_second"]),
            human_bytes(r["peak_memory_bytes"]),
        ]
        if compare_raw:
            row += [
                _fmt(r["raw"]["decode_tokens_per_second"]),
                _fmt(r["ratio"]["decode_tokens_per_second"], 3),
                _fmt(r["ratio"]["throughput_tokens_per_second"], 3),
            ]
        rows.append(row)
    m = report["model"]
    load = report["load_seconds"]
    load_text = f"load {load['llmcli']:.2f} s" + (
        f" (raw {load['raw']:.2f} s, ×{load['ratio']:.3f})" if "raw" in load else ""
    )
    extras = [m["attn_implementation"] or "", "compiled" if report["settings"]["compile"] else ""]
    details = ", ".join([m["dtype"], m["device"], f"{report['settings']['threads']} threads", *filter(None, extras)])
    title = f"bench: {m['source']} ({details})"
    return [
        output.Section(
            title,
            [
                output.Table(columns, rows, numeric=set(range(len(columns)))),
                output.Para(load_text + f"; median (min–max) of {report['settings']['reps']} runs", "dim"),
            ],
        )
    ]
