"""`inspect ADAPTER_DIR`: a PEFT LoRA adapter (W' = W + B·A · alpha/r), read from its files alone."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.modelfs.checkpoint import read_shard
from llmcli.modelfs.config import show_value
from llmcli.modelfs.files import read_json_object
from llmcli.output import KV, Para, Section, Table

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."


def is_adapter_dir(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


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


def inspect_adapter(path: Path, base: str | None) -> tuple[dict[str, Any], list[Section]]:
    config = read_json_object(path / ADAPTER_CONFIG, max_bytes=1024 * 1024, what="adapter config")
    peft_type = config.get("peft_type")
    if peft_type not in ("LORA", None):
        raise LlmcliError(f"peft_type {peft_type!r}: only LoRA adapters are understood", path=path / ADAPTER_CONFIG)
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise LlmcliError(f"r must be a positive whole number, got {show_value(r)}", path=path / ADAPTER_CONFIG)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise LlmcliError(f"lora_alpha must be a number, got {show_value(alpha)}", path=path / ADAPTER_CONFIG)
    rslora = bool(config.get("use_rslora"))
    scaling = alpha / math.sqrt(r) if rslora else alpha / r
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise LlmcliError(f"no {ADAPTER_WEIGHTS} (pickle adapters are not read)", path=path)
    tensors, _ = read_shard(weights)
    adapter_params = sum(t.numel for t in tensors)
    by_module: dict[str, int] = {}
    for t in tensors:
        leaf = t.name.split(".lora_")[0].rsplit(".", 1)[-1] if ".lora_" in t.name else "other"
        by_module[leaf] = by_module.get(leaf, 0) + t.numel
    checks: list[str] = []
    base_dir = _base_dir(config, base)
    base_params = None
    fits = None
    if base_dir is not None:
        from llmcli.modelfs.checkpoint import read_checkpoint

        base_ckpt = read_checkpoint(base_dir)
        base_params = base_ckpt.parameters if base_ckpt.tensors else None
        if base_ckpt.tensors:
            fits = True
            for t in tensors:
                if ".lora_A." not in t.name and ".lora_B." not in t.name:
                    continue
                module = t.name.removeprefix(PREFIX).split(".lora_")[0]
                target = base_ckpt.tensors.get(f"{module}.weight")
                if target is None:
                    checks.append(f"{t.name}: the base model has no {module}.weight")
                    fits = False
                    continue
                out_dim, in_dim = target.shape[0], target.shape[-1]
                want = [r, in_dim] if ".lora_A." in t.name else [out_dim, r]
                if t.shape != want:
                    checks.append(f"{t.name} has shape {t.shape}, the base {module} needs {want}")
                    fits = False
    elif base:
        checks.append(f"base model {base} is not a transformers directory: fit not checked")
    data = {
        "path": str(path),
        "format": "peft-lora",
        "adapter": {
            "r": r,
            "lora_alpha": alpha,
            "scaling": scaling,
            "use_rslora": rslora,
            "lora_dropout": config.get("lora_dropout"),
            "target_modules": config.get("target_modules"),
            "bias": config.get("bias"),
            "modules_to_save": config.get("modules_to_save"),
            "base_model_name_or_path": config.get("base_model_name_or_path"),
        },
        "parameters": {
            "adapter": adapter_params,
            "by_module": by_module,
            "base": base_params,
            "fraction_of_base": (adapter_params / base_params) if base_params else None,
        },
        "tensors": len(tensors),
        "base_path": str(base_dir) if base_dir else None,
        "fits_base": fits,
        "checks": checks,
    }
    rows = [
        ("rank r", str(r), "inner size of the low-rank update B·A"),
        ("lora_alpha", show_value(alpha), ""),
        ("scaling", f"{scaling:g}", "alpha/√r (rsLoRA)" if rslora else "alpha/r: ΔW = scaling · B·A"),
        ("dropout", show_value(config.get("lora_dropout")), "on the adapter's input, training only"),
        ("target modules", show_value(config.get("target_modules")), ""),
        (
            "base model",
            show_value(config.get("base_model_name_or_path")),
            str(base_dir) if base_dir else "not found locally (use --base)",
        ),
    ]
    prows = [[m, f"{n:,}"] for m, n in sorted(by_module.items())]
    fraction = (
        f"{adapter_params:,} adapter parameters = {adapter_params / base_params:.4%} of the base's {base_params:,}"
        if base_params
        else f"{adapter_params:,} adapter parameters"
    )
    sections = [
        Section(f"LoRA adapter ({path})", [KV(rows)]),
        Section("Parameters", [Table(["target", "parameters"], prows, numeric={1}), Para(fraction)]),
        Section(
            "Checks",
            [Para(c, "warn") for c in checks]
            or [Para("every lora_A/lora_B fits the base model's layers" if fits else "no problems found", "ok")],
        ),
    ]
    return data, sections
