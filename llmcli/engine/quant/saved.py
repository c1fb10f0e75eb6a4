"""How `llmcli quantize` writes a quantized layer and how a saved one is read back into the kernel's codes:
compressed-tensors' layouts, the format of transformers' and vLLM's compressed-tensors support (transformers
with the compressed-tensors package reads these files: tests/commands/test_quantize.py).

Written: "naive-quantized", the layout that carries a float zero, so that a saved layer is the codes
`--quantize` computes (engine.quant.codes.search) and not a rounding of them: `name.weight` (int8, each code
minus 2^(bits-1), one a byte), `name.weight_scale` ([out, groups]) and `name.weight_zero_point` ([out,
groups], float32); a weight is `(value - zero_point) * scale`. It costs a byte a 4-bit code on disk (the
packed layout half that) but nothing in memory: loading packs the codes for the kernel.
Read as well: "pack-quantized" files earlier llmcli wrote, `name.weight_packed` (int32, eight 4-bit or four
8-bit values a word, the first in the low bits, each stored plus 2^(bits-1)), `name.weight_scale`,
`name.weight_shape` and `name.weight_zero_point` (integer zero points packed the same way down the outputs),
or, for int8 saved per channel and symmetric, no zero points.
"""

from __future__ import annotations

from typing import Any

from llmcli.engine.quant.int8 import CHANNEL_GROUP, Int8Codes, from_per_channel
from llmcli.engine.quant.schemes import Scheme

PACKED = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")
NAIVE = ("weight", "weight_scale", "weight_zero_point")
WRITTEN_FORMAT = "naive-quantized"


def unpack_int32(words: Any, bits: int, cols: int) -> Any:
    """Unsigned values [rows, cols] as uint8 from int32 words, 32 / bits a word, the first in the low bits
    (pack-quantized files, as compressed-tensors packs them)."""
    import torch

    per = 32 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits
    values = (words.to(torch.int64)[..., None] >> shifts) & (2**bits - 1)
    return values.reshape(words.shape[0], -1)[:, :cols].to(torch.uint8)


def tensors(name: str, codes: Any, *, middle: int, dtype: Any) -> dict[str, Any]:
    """A layer's saved tensors (naive-quantized) from its codes."""
    import torch

    return {
        f"{name}.weight": (codes.codes.to(torch.int16) - middle).to(torch.int8).contiguous(),
        f"{name}.weight_scale": codes.scales.to(dtype).contiguous(),
        f"{name}.weight_zero_point": (-codes.zeros / codes.scales).to(torch.float32).contiguous(),
    }


def read(parts: dict[str, Any], scheme: Scheme) -> Any:
    """The kernel's codes from a layer's saved tensors, either layout (per group)."""
    import torch

    scales = parts["weight_scale"].to(torch.float32)
    if "weight_packed" not in parts:
        codes = (parts["weight"].to(torch.int16) + scheme.middle).to(torch.uint8)
        zeros = (-parts["weight_zero_point"].to(torch.float32) * scales).to(torch.bfloat16).to(torch.float32)
        return scheme.codes(codes, scales, zeros)
    out, inputs = (int(v) for v in parts["weight_shape"].tolist())
    groups = scales.shape[1]
    points = unpack_int32(parts["weight_zero_point"].t().contiguous(), scheme.bits, out).t().to(torch.float32)
    codes = unpack_int32(parts["weight_packed"], scheme.bits, inputs)
    return scheme.codes(codes, scales, (scheme.middle - points[:, :groups]) * scales)


def read_int8_channel(parts: dict[str, Any]) -> Int8Codes:
    """The kernel's codes from an int8 layer saved per channel, symmetric (files written before int8 was
    saved per group)."""
    import torch

    out, inputs = (int(v) for v in parts["weight_shape"].tolist())
    codes = (unpack_int32(parts["weight_packed"], 8, inputs).to(torch.int16) - 128).to(torch.int8)
    return from_per_channel(codes, parts["weight_scale"].reshape(out), CHANNEL_GROUP)


def quantization_config(*, scheme: Scheme, group_size: int, ignore: list[str],
                        layers: dict[str, Scheme] | None = None) -> dict[str, Any]:  # fmt: skip
    """config.json's `quantization_config` for the saved layers: one group for every Linear, and one a layer
    saved in another scheme (`layers`: the output layer in int8), which compressed-tensors matches first (an
    exact name before a class)."""
    groups = {"group_0": _group(["Linear"], scheme, group_size)}
    for number, (name, own) in enumerate((layers or {}).items(), 1):
        groups[f"group_{number}"] = _group([name], own, group_size)
    return {
        "quant_method": "compressed-tensors",
        "format": WRITTEN_FORMAT,
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": ignore,
        "kv_cache_scheme": None,
    }


def _group(targets: list[str], scheme: Scheme, group_size: int) -> dict[str, Any]:
    weights = scheme.saved_weights(group_size) | {"dynamic": False, "observer": "minmax", "actorder": None,
                                                  "block_structure": None}  # fmt: skip
    return {"targets": targets, "weights": weights, "input_activations": None, "output_activations": None,
            "format": WRITTEN_FORMAT}  # fmt: skip
