"""A PEFT LoRA adapter directory (W' = W + B·A · alpha/r), read and validated from its files alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.modelfs.checkpoint import Checkpoint, TensorInfo, read_shard
from llmcli.modelfs.config import show_value
from llmcli.modelfs.files import read_json_object

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."


@dataclass
class Adapter:
    path: Path
    config: dict[str, Any]
    r: int
    alpha: float
    rslora: bool
    tensors: list[TensorInfo]

    @property
    def scaling(self) -> float:
        return self.alpha / math.sqrt(self.r) if self.rslora else self.alpha / self.r

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    def by_module(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors:
            leaf = t.name.split(".lora_")[0].rsplit(".", 1)[-1] if ".lora_" in t.name else "other"
            counts[leaf] = counts.get(leaf, 0) + t.numel
        return counts


def read_adapter(path: Path) -> Adapter:
    """Its config and its safetensors header, checked (pickle-only adapters are refused)."""
    config = read_json_object(path / ADAPTER_CONFIG, max_bytes=1024 * 1024, what="adapter config")
    peft_type = config.get("peft_type")
    if peft_type not in ("LORA", None):
        raise LlmcliError(f"peft_type {peft_type!r}: only LoRA adapters are understood", path=path / ADAPTER_CONFIG)
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise LlmcliError(f"r must be a positive whole number, got {show_value(r)}", path=path / ADAPTER_CONFIG)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise LlmcliError(f"lora_alpha must be a number, got {show_value(alpha)}", path=path / ADAPTER_CONFIG)
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise LlmcliError(f"no {ADAPTER_WEIGHTS} (pickle adapters are not read)", path=path)
    tensors, _ = read_shard(weights)
    return Adapter(path, config, r, alpha, bool(config.get("use_rslora")), tensors)


def fit_problems(adapter: Adapter, base: Checkpoint) -> list[str]:
    """Every lora_A/lora_B against the base layer it updates: [r, in] and [out, r]."""
    problems = []
    for t in adapter.tensors:
        if ".lora_A." not in t.name and ".lora_B." not in t.name:
            continue
        module = t.name.removeprefix(PREFIX).split(".lora_")[0]
        target = base.tensors.get(f"{module}.weight")
        if target is None:
            problems.append(f"{t.name}: the base model has no {module}.weight")
            continue
        out_dim, in_dim = target.shape[0], target.shape[-1]
        want = [adapter.r, in_dim] if ".lora_A." in t.name else [out_dim, adapter.r]
        if t.shape != want:
            problems.append(f"{t.name} has shape {t.shape}, the base {module} needs {want}")
    return problems
