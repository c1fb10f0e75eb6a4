"""`inspect ADAPTER_DIR`: a PEFT LoRA adapter, its rank and scaling, and its fit to the base model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.modelfs.adapter import Adapter, fit_problems, read_adapter
from llmcli.modelfs.config import show_value
from llmcli.output import KV, Para, Section, Table
from llmcli.reports import Report


def _base_dir(config: dict[str, Any], base: str | None) -> Path | None:
    from llmcli.modelfs.locate import locate

    name = base or config.get("base_model_name_or_path")
    if not isinstance(name, str) or not name:
        return None
    try:
        ref = locate(name)
    except LlmcliError:
        if base:  # the user named it: say what is wrong with it
            raise
        return None
    return ref.path if ref.kind == "hf" else None


def build(path: Path, *, base: str | None = None) -> Report:
    adapter = read_adapter(path)
    base_dir = _base_dir(adapter.config, base)
    checks: list[str] = []
    base_params, fits = None, None
    if base_dir is not None:
        from llmcli.modelfs.checkpoint import read_checkpoint

        base_ckpt = read_checkpoint(base_dir)
        if base_ckpt.tensors:
            base_params = base_ckpt.parameters
            checks = fit_problems(adapter, base_ckpt)
            fits = not checks
    elif base:
        checks.append(f"base model {base} is not a transformers directory: fit not checked")
    data = _data(adapter, base_dir, base_params, fits, checks)
    return Report(data, _sections(adapter, base_dir, base_params, fits, checks))


def _data(adapter: Adapter, base_dir: Path | None, base_params: int | None, fits, checks) -> dict[str, Any]:
    config = adapter.config
    return {
        "path": str(adapter.path),
        "format": "peft-lora",
        "adapter": {
            "r": adapter.r,
            "lora_alpha": adapter.alpha,
            "scaling": adapter.scaling,
            "use_rslora": adapter.rslora,
            "lora_dropout": config.get("lora_dropout"),
            "target_modules": config.get("target_modules"),
            "bias": config.get("bias"),
            "modules_to_save": config.get("modules_to_save"),
            "base_model_name_or_path": config.get("base_model_name_or_path"),
        },
        "parameters": {
            "adapter": adapter.parameters,
            "by_module": adapter.by_module(),
            "base": base_params,
            "fraction_of_base": (adapter.parameters / base_params) if base_params else None,
        },
        "tensors": len(adapter.tensors),
        "base_path": str(base_dir) if base_dir else None,
        "fits_base": fits,
        "checks": checks,
    }


def _sections(adapter: Adapter, base_dir: Path | None, base_params: int | None, fits, checks) -> list[Section]:
    config = adapter.config
    rows = [
        ("rank r", str(adapter.r), "inner size of the low-rank update B·A"),
        ("lora_alpha", show_value(adapter.alpha), ""),
        ("scaling", f"{adapter.scaling:g}", "alpha/√r (rsLoRA)" if adapter.rslora else "alpha/r: ΔW = scaling · B·A"),
        ("dropout", show_value(config.get("lora_dropout")), "on the adapter's input, training only"),
        ("target modules", show_value(config.get("target_modules")), ""),
        (
            "base model",
            show_value(config.get("base_model_name_or_path")),
            str(base_dir) if base_dir else "not found locally (use --base)",
        ),
    ]
    prows = [[m, f"{n:,}"] for m, n in sorted(adapter.by_module().items())]
    n = adapter.parameters
    fraction = (
        f"{n:,} adapter parameters = {n / base_params:.4%} of the base's {base_params:,}"
        if base_params
        else f"{n:,} adapter parameters"
    )
    return [
        Section(f"LoRA adapter ({adapter.path})", [KV(rows)]),
        Section("Parameters", [Table(["target", "parameters"], prows, numeric={1}), Para(fraction)]),
        Section(
            "Checks",
            [Para(c, "warn") for c in checks]
            or [Para("every lora_A/lora_B fits the base model's layers" if fits else "no problems found", "ok")],
        ),
    ]
