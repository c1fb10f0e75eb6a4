"""inspect's section for a checkpoint saved quantized (modelfs.quantized's facts, read from the headers)."""

from __future__ import annotations

from typing import Any

from llmcli.modelfs.checkpoint import Checkpoint
from llmcli.modelfs.quantized import describe
from llmcli.output import KV, Section


def quantization(config: dict[str, Any], ckpt: Checkpoint) -> tuple[dict[str, Any], Section] | None:
    """The facts and the section, or None for a checkpoint not saved quantized."""
    quant = describe(config, ckpt)
    return None if quant is None else (quant, quantization_section(quant))


def quantization_section(quant: dict[str, Any]) -> Section:
    group = f", group {quant['group_size']}" if quant["group_size"] else " per channel"
    kept = ", ".join(quant["kept_in_float"]) or "none"
    rows = [
        ("scheme", f"{quant['scheme']}{group}", f"{quant['bits']}-bit codes, compressed-tensors {quant['format']}"),
        ("layers", f"{quant['quantized_layers']:,}", "linear layers stored quantized"),
        ("parameters", f"{quant['quantized_params']:,}", "weights those layers stand for"),
        ("bytes/param", f"{quant['bytes_per_param']}", "codes, scales and zero points, per weight"),
        ("kept in float", kept, "layers the file leaves unquantized"),
    ]
    rows += [(name, scheme, "saved in a scheme of its own") for name, scheme in quant["own_scheme"].items()]
    return Section("Quantization (from the headers)", [KV(rows)])
