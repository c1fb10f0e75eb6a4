"""4-bit weight-only linear layers (`--quantize int4`) on torch's int4 kernels.

A weight is cut into groups of `group_size` inputs; each group has a scale and a zero, and a weight is
`(code - 8) * scale + zero` with a 4-bit code. The CPU kernel (`_weight_int4pack_mm_for_cpu`) and the CUDA
one (`_weight_int4pack_mm`) both take bfloat16 activations and bfloat16 scales and zeros: with float32
activations the CPU kernel was ~50x slower (issue 29), so a layer casts its input to bfloat16 and its
output back, and the rest of the model keeps its dtype. Codes come from float weights at load
(`quantize_weight`: a float zero, GGUF Q4_1's scheme), from `llmcli quantize`'s files (`quantize_with_points`:
integer zero points, compressed-tensors' scheme) or from a GGUF file's own blocks (engine.quant.gguf_blocks).
"""

from __future__ import annotations

from typing import Any, NamedTuple

CUDA_INNER_K_TILES = 8  # the CUDA packing's tile; it needs the inputs to be a multiple of 16 * this


class Int4Codes(NamedTuple):
    """A weight as 4-bit codes [out, in] (uint8, 0..15) with a scale and a zero per group [out, in / group]:
    weight = (code - 8) * scale + zero."""

    codes: Any
    scales: Any
    zeros: Any

    @property
    def group_size(self) -> int:
        return self.codes.shape[1] // self.scales.shape[1]

    def dequantize(self) -> Any:
        """The float32 weight these codes stand for (tests, and the benchmarks' checks)."""
        return dequantize(self, middle=8)


def dequantize(codes: Any, *, middle: int) -> Any:
    """`(code - middle) * scale + zero` per group, as float32: for Int4Codes and int8's Int8Codes alike."""
    import torch

    out, inputs = codes.codes.shape
    grouped = codes.codes.reshape(out, -1, codes.group_size).to(torch.float32) - middle
    return (grouped * codes.scales[..., None].float() + codes.zeros[..., None].float()).reshape(out, inputs)


def quantize_weight(weight: Any, group_size: int) -> Int4Codes:
    """Asymmetric 4-bit codes for a float weight [out, in]: each group's range in 15 steps from its minimum,
    the minimum the zero (GGUF Q4_1's scheme; the kernel takes any float zero)."""
    import torch

    out, inputs = weight.shape
    grouped = weight.detach().to(torch.float32).reshape(out, inputs // group_size, group_size)
    low, high = grouped.amin(-1), grouped.amax(-1)
    scales = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    codes = ((grouped - low[..., None]) / scales[..., None]).round().clamp(0, 15).to(torch.uint8)
    return Int4Codes(codes.reshape(out, inputs), scales, low + 8 * scales)


SHRINKS = (1.0, 0.95, 0.9, 0.85, 0.8)  # the ranges tried per group by quantize_with_points


def quantize_with_points(weight: Any, group_size: int) -> tuple[Int4Codes, Any]:
    """4-bit codes with an integer zero point per group (0..15, the code that stands for 0.0): the form
    compressed-tensors saves. Each group's range, widened to hold 0, is tried at a few shrinks and the one
    with the least squared error kept (on Gaussian weights this closes most of the gap to a float zero)."""
    import torch

    out, inputs = weight.shape
    grouped = weight.detach().to(torch.float32).reshape(out, inputs // group_size, group_size)
    best: tuple[Any, Any, Any] | None = None
    best_error = None
    for shrink in SHRINKS:
        low = grouped.amin(-1).clamp(max=0) * shrink
        scales = ((grouped.amax(-1).clamp(min=0) * shrink - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        points = (-low / scales).round().clamp(0, 15)
        codes = ((grouped / scales[..., None]).round() + points[..., None]).clamp(0, 15)
        error = (((codes - points[..., None]) * scales[..., None] - grouped) ** 2).sum(-1)
        if best is None:
            best, best_error = (codes, scales, points), error
            continue
        better = error < best_error
        best = tuple(torch.where(better[..., None] if t.dim() == 3 else better, t, b)
                     for t, b in zip((codes, scales, points), best, strict=True))  # fmt: skip
        best_error = torch.minimum(error, best_error)
    codes, scales, points = best
    int4 = Int4Codes(codes.to(torch.uint8).reshape(out, inputs), scales, (8 - points) * scales)
    return int4, points.to(torch.uint8)


def refusal(out_features: int, in_features: int, group_size: int, *, device: str) -> str | None:
    """Why torch's int4 kernel cannot take a layer of this shape; None when it can."""
    if in_features % group_size:
        return f"its {in_features} inputs are not a multiple of the group size {group_size}"
    if device.startswith("cuda") and in_features % (16 * CUDA_INNER_K_TILES):
        return f"its {in_features} inputs are not a multiple of {16 * CUDA_INNER_K_TILES} (CUDA's int4 packing)"
    if device.startswith("cuda") and out_features % 8:
        return f"its {out_features} outputs are not a multiple of 8 (CUDA's int4 packing)"
    return None


def pack(codes: Any, *, device: str) -> Any:
    """The kernel's packed layout: the CPU kernel packs [out, in] int32 codes itself; CUDA's takes two codes
    a byte (the even input in the high nibble) and tiles them."""
    import torch

    if not device.startswith("cuda"):
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    on_gpu = codes.to(device=device, dtype=torch.int32)
    pairs = ((on_gpu[:, ::2] << 4) | on_gpu[:, 1::2]).to(torch.uint8)
    return torch.ops.aten._convert_weight_to_int4pack(pairs, CUDA_INNER_K_TILES)
