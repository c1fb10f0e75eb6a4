"""`llmcli compare BASE [CANDIDATE] -f text.txt`: how far a change moved a model's next-token distribution."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from llmcli.commands import options as opt
from llmcli.commands.model_options import ModelArgs, locate_adapter, model_options
from llmcli.errors import UsageError
from llmcli.plan import Dtype, Quantize

LOADING = ("device", "dtype", "quantize", "trust_remote_code", "allow_pickle", "memory_check")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)


@model_options(*LOADING)
def compare(
    models: list[str] = typer.Argument(
        None,
        help="BASE and CANDIDATE (directories, .gguf files, Hub ids in the cache); CANDIDATE alone with "
        "--base-ref; BASE alone to compare it with itself under --candidate-* settings.",
    ),  # fmt: skip
    text: str = typer.Option(None, "--text", help="The text to score (or --file, or stdin)."),
    file: opt.FileOpt = None,
    window: int = typer.Option(None, "--window", help="Tokens per window (default: the context, capped to memory)."),
    stride: int = typer.Option(None, "--stride", help="A window starts every this many tokens (default: window/2)."),
    top_positions: int = typer.Option(10, "--top-positions", min=0, max=1000, help="Where they part: how many rows."),
    candidate_dtype: Dtype = typer.Option(None, "--candidate-dtype", help="The candidate's dtype (default: --dtype)."),
    candidate_quantize: Quantize = typer.Option(None, "--candidate-quantize", help="The candidate's --quantize."),
    candidate_adapter: str = typer.Option(
        None, "--candidate-adapter", help="A LoRA adapter on top of BASE: one copy of the weights, adapter off and on."
    ),
    base_ref: str = typer.Option(None, "--base-ref", help="A reference file from `score --save-ref` as the base."),
    json_out: opt.JsonOpt = False,
    *,
    model_args: ModelArgs,
) -> None:
    """KL both ways, top-1 agreement, Δp of the actual token and both perplexities, per token and in summary,
    and the positions where the two models part most."""
    from llmcli import output
    from llmcli.prompts import single_prompt
    from llmcli.reports import compare as report
    from llmcli.scoring import check_window

    names = list(models or [])
    if len(names) > 2 or (base_ref is not None and len(names) > 1):
        raise UsageError("compare takes BASE and CANDIDATE, or CANDIDATE alone with --base-ref")
    check_window(window, stride, context=None)
    spec, cand_spec = _candidate_spec(model_args.spec(prefill_only=True), candidate_dtype, candidate_quantize)
    body = single_prompt(text, file)
    ref = None
    if base_ref is not None:
        from llmcli.modelfs.reference import read_reference

        ref = read_reference(Path(base_ref))
    base, cand, labels = _sides(names, spec, cand_spec, candidate_adapter, with_base=ref is None)
    from llmcli.analysis.compare import compare_record

    def bar(total: int):
        return output.progress(total, "comparing windows", enabled=output.stderr_is_tty())

    data = compare_record(base, cand, body, ref=ref, ref_path=base_ref, window=window, stride=stride,
                          shown=top_positions, progress=bar, labels=labels)  # fmt: skip
    output.present(report.compare(data), json=json_out)


def _candidate_spec(spec: Any, dtype: Dtype | None, quantize: Quantize | None) -> tuple[Any, Any]:
    """The base's and the candidate's specs: --group-size goes to whichever side is int4."""
    from llmcli.plan import check_combinations

    changed = {k: v for k, v in (("dtype", dtype), ("quantize", quantize)) if v is not None}
    if changed.get("quantize") == Quantize.int8_dynamic and "dtype" not in changed:
        changed["dtype"] = Dtype.float32  # torch's dynamic int8 runs on float32 weights
    cand = replace(spec, **changed)
    if spec.quantize != Quantize.int4 and cand.quantize == Quantize.int4:
        spec = replace(spec, group_size=None)
    check_combinations(spec=spec)
    check_combinations(spec=cand)
    return spec, cand


def _sides(names: list[str], spec: Any, cand_spec: Any, adapter: str | None, *, with_base: bool) -> tuple:
    """The loaded sides: one copy when the candidate is BASE with an adapter switched on, or BASE itself."""
    from llmcli.analysis.compare import Side
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model

    def loaded(name: str | None, which: Any) -> Any:
        return load(resolve_model(name, verbose=which.show_progress), which)

    base_name = names[0] if names and with_base else None
    cand_name = names[-1] if names and (len(names) == 2 or not with_base) else base_name
    located = locate_adapter(adapter, option="--candidate-adapter") if adapter is not None else None
    cand_spec = replace(cand_spec, adapter=located)
    if not with_base:
        cand = Side(loaded(cand_name, cand_spec))
        return None, cand, ({}, _label(cand, adapter=located))
    same_model = cand_name == base_name and replace(cand_spec, adapter=None) == spec
    if same_model:  # one copy of the weights serves both sides
        one = loaded(base_name, cand_spec)
        base = Side(one, adapter_off=located is not None)
        cand = Side(one)
    else:
        base, cand = Side(loaded(base_name, spec)), Side(loaded(cand_name, cand_spec))
    return base, cand, (_label(base), _label(cand, adapter=located))


def _label(side: Any, *, adapter: Path | None = None) -> dict[str, Any]:
    info = side.loaded.describe()
    parts = [Path(info["path"]).name, info["dtype"], *([str(info["quantize"])] if info.get("quantize") else [])]
    if adapter is not None:
        parts.append(f"+ {adapter.name}")
    return {"label": " ".join(parts), "path": info["path"], "dtype": info["dtype"], "quantize": info.get("quantize"),
            "adapter": None if adapter is None else str(adapter)}  # fmt: skip
