"""compressed-tensors' "pack-quantized" layout: how `llmcli quantize` writes a quantized layer and how a
saved one is read back into the kernel's codes.

Chosen because it is the format of transformers' and vLLM's compressed-tensors support (transformers with the
compressed-tensors package reads these files: tests/commands/test_quantize.py). A layer
`name` becomes `name.weight_packed` (int32, eight 4-bit or four 8-bit values a word, the first in the low
bits, each value stored plus 2^(bits-1)), `name.weight_scale` ([out, groups]), `name.weight_shape` and for
int4 `name.weight_zero_point` (the integer zero points, packed the same way down the outputs); a weight is
`(value - zero_point) * scale`.
"""

from __future__ import annotations

from typing import Any

from llmcli.engine.quant.int4 import Int4Codes
from llmcli.engine.quant.int8 import Int8Codes, from_per_channel

PACKED = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")


def pack_int32(values: Any, bits: int) -> Any:
    """Unsigned values [rows, cols] (< 2^bits) packed along the columns, 32 / bits a word."""
    import torch

    per = 32 // bits
    rows, cols = values.shape
    padded = torch.nn.functional.pad(values.to(torch.int64), (0, (-cols) % per)).reshape(rows, -1, per)
    shifts = torch.arange(per, dtype=torch.int64) * bits
    words = (padded << shifts).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_int32(words: Any, bits: int, cols: int) -> Any:
    """The inverse of pack_int32: unsigned values [rows, cols] as uint8."""
    import torch

    per = 32 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits
    values = (words.to(torch.int64)[..., None] >> shifts) & (2**bits - 1)
    return values.reshape(words.shape[0], -1)[:, :cols].to(torch.uint8)


def int4_tensors(name: str, codes: Int4Codes, points: Any, *, dtype: Any) -> dict[str, Any]:
    """A layer's saved tensors from its codes and integer zero points (engine.quant.int4.quantize_with_points)."""
    import torch

    out, inputs = codes.codes.shape
    return {
        f"{name}.weight_packed": pack_int32(codes.codes, 4),
        f"{name}.weight_scale": codes.scales.to(dtype).contiguous(),
        f"{name}.weight_zero_point": pack_int32(points.t().contiguous(), 4).t().contiguous(),
        f"{name}.weight_shape": torch.tensor([out, inputs], dtype=torch.int64),
    }


def int8_tensors(name: str, codes: Any, scales: Any, *, dtype: Any) -> dict[str, Any]:
    import torch

    return {
        f"{name}.weight_packed": pack_int32((codes.to(torch.int16) + 128).to(torch.uint8), 8),
        f"{name}.weight_scale": scales[:, None].to(dtype).contiguous(),
        f"{name}.weight_shape": torch.tensor(list(codes.shape), dtype=torch.int64),
    }


def read_int4(parts: dict[str, Any]) -> Int4Codes:
    """The kernel's codes from a layer's saved tensors."""
    import torch

    out, inputs = (int(v) for v in parts["weight_shape"].tolist())
    scales = parts["weight_scale"].to(torch.float32)
    groups = scales.shape[1]
    points = unpack_int32(parts["weight_zero_point"].t().contiguous(), 4, out).t().to(torch.float32)
    codes = unpack_int32(parts["weight_packed"], 4, inputs)
    return Int4Codes(codes, scales, (8 - points[:, :groups]) * scales)


def read_int8(parts: dict[str, Any], *, group_size: int) -> Int8Codes:
    """The kernel's codes from a saved per-channel int8 layer."""
    import torch

    out, inputs = (int(v) for v in parts["weight_shape"].tolist())
    codes = (unpack_int32(parts["weight_packed"], 8, inputs).to(torch.int16) - 128).to(torch.int8)
    return from_per_channel(codes, parts["weight_scale"].reshape(out), group_size)


def quantization_config(*, scheme: str, group_size: int | None, ignore: list[str]) -> dict[str, Any]:
    """config.json's `quantization_config` for the saved layers."""
    if scheme == "int4":
        weights = {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": group_size}
    else:
        weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
    weights |= {"dynamic": False, "observer": "minmax", "actorder": None, "block_structure": None}
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights,
                "input_activations": None,
                "output_activations": None,
                "format": "pack-quantized",
            },  # fmt: skip
        },
        "ignore": ignore,
        "kv_cache_scheme": None,
    }
