"""A checkpoint that `llmcli quantize` (or another compressed-tensors writer) saved quantized: which scheme its
config.json names, and what its files hold, read from the headers alone (no torch)."""

from __future__ import annotations

from typing import Any

from llmcli.modelfs.checkpoint import Checkpoint


def saved_scheme(config: dict[str, Any]) -> tuple[str, int | None] | None:
    """("int4" or "int8", group) for a config.json this module's layout describes, ("int8", None) for int8 saved
    per channel (what llmcli wrote before it saved groups); None otherwise."""
    quant = config.get("quantization_config")
    if not isinstance(quant, dict) or quant.get("quant_method") != "compressed-tensors":
        return None
    if quant.get("format") not in ("pack-quantized", "naive-quantized"):
        return None
    groups = [g for g in (quant.get("config_groups") or {}).values() if isinstance(g, dict)]
    every = [g for g in groups if g.get("targets") == ["Linear"]]
    weights = every[0].get("weights") if len(every) == 1 else groups[0].get("weights") if len(groups) == 1 else None
    if not isinstance(weights, dict) or weights.get("type") != "int":
        return None
    bits = weights.get("num_bits")
    if bits in (4, 8) and not weights.get("symmetric") and weights.get("strategy") == "group":
        return f"int{bits}", weights.get("group_size")
    if bits == 8 and weights.get("symmetric") and weights.get("strategy") == "channel":
        return "int8", None
    return None


def describe(config: dict[str, Any], ckpt: Checkpoint) -> dict[str, Any] | None:
    """inspect's quantization facts: scheme, bits, group size, layers, bytes a parameter; None if not saved so."""
    scheme = saved_scheme(config)
    if scheme is None:
        return None
    name, group = scheme
    bits = int(name.removeprefix("int"))
    layers, packed = saved_layers(ckpt)
    params = 0
    held = 0
    for layer in layers:
        if packed:
            rows, words = ckpt.tensors[f"{layer}.weight_packed"].shape
            params += rows * words * (32 // bits)
        else:
            params += ckpt.tensors[f"{layer}.weight"].numel
        held += sum(ckpt.tensors[f"{layer}.{part}"].nbytes for part in ("weight_packed", "weight", "weight_scale",
                    "weight_zero_point") if f"{layer}.{part}" in ckpt.tensors)  # fmt: skip
    return {
        "scheme": name,
        "bits": bits,
        "format": "pack-quantized" if packed else "naive-quantized",
        "group_size": group,
        "quantized_layers": len(layers),
        "quantized_params": params,
        "bytes_per_param": round(held / params, 3) if params else None,
        "kept_in_float": list(config["quantization_config"].get("ignore") or []),
        "own_scheme": saved_overrides(config),
    }


def saved_overrides(config: dict[str, Any]) -> dict[str, str]:
    """Layers saved in a scheme of their own (a config group that targets one name: the output layer in int8),
    layer -> "int4" or "int8"."""
    groups = (config.get("quantization_config") or {}).get("config_groups") or {}
    out = {}
    for group in groups.values():
        targets, weights = group.get("targets"), group.get("weights") or {}
        if isinstance(targets, list) and targets != ["Linear"] and weights.get("num_bits") in (4, 8):
            out |= {name: f"int{weights['num_bits']}" for name in targets if isinstance(name, str)}
    return out


def saved_layers(ckpt: Checkpoint) -> tuple[list[str], bool]:
    """The layers a quantized checkpoint holds as codes, and whether they are packed (pack-quantized: what
    llmcli wrote before it saved float zeros) rather than a code a byte (naive-quantized)."""
    packed = [key.removesuffix(".weight_packed") for key in ckpt.tensors if key.endswith(".weight_packed")]
    if packed:
        return packed, True
    return [key.removesuffix(".weight_zero_point") for key in ckpt.tensors if key.endswith(".weight_zero_point")
            and ckpt.tensors.get(key.removesuffix("_zero_point")) is not None], False  # fmt: skip
