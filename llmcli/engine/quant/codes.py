"""Weight-only codes of any width (4 or 8 bits): a weight [out, in] cut into groups of `group_size` inputs, each
group with a scale and a zero, a weight `(code - middle) * scale + zero` with `middle = 2^(bits - 1)`.

Two searches: `minmax` (each group's range in 2^bits - 1 steps from its minimum, the minimum the zero: GGUF
Q4_1's scheme; what loading computes) and `with_points` (an integer zero point per group, the code that stands
for 0.0: compressed-tensors' form, what `llmcli quantize` saves). Pure arithmetic on torch tensors.
"""

from __future__ import annotations

from typing import Any

SHRINKS = (1.0, 0.95, 0.9, 0.85, 0.8)  # the ranges tried per group by with_points


def _grouped(weight: Any, group_size: int) -> Any:
    import torch

    out, inputs = weight.shape
    return weight.detach().to(torch.float32).reshape(out, inputs // group_size, group_size)


def minmax(weight: Any, group_size: int, *, bits: int) -> tuple[Any, Any, Any]:
    """(codes [out, in] uint8, scales, zeros [out, in / group]): each group's range from its minimum."""
    import torch

    levels, middle = 2**bits - 1, 2 ** (bits - 1)
    grouped = _grouped(weight, group_size)
    low, high = grouped.amin(-1), grouped.amax(-1)
    scales = ((high - low) / levels).clamp(min=torch.finfo(torch.float32).tiny)
    codes = ((grouped - low[..., None]) / scales[..., None]).round().clamp(0, levels).to(torch.uint8)
    return codes.reshape(weight.shape), scales, low + middle * scales


def with_points(weight: Any, group_size: int, *, bits: int) -> tuple[Any, Any, Any, Any]:
    """(codes, scales, zeros, points): codes with an integer zero point per group (0 .. 2^bits - 1). Each group's
    range, widened to hold 0, is tried at a few shrinks and the one with the least squared error kept (on
    Gaussian weights this closes most of the gap to a float zero)."""
    import torch

    levels, middle = 2**bits - 1, 2 ** (bits - 1)
    grouped = _grouped(weight, group_size)
    best: tuple[Any, Any, Any] | None = None
    best_error = None
    for shrink in SHRINKS:
        low = grouped.amin(-1).clamp(max=0) * shrink
        scales = ((grouped.amax(-1).clamp(min=0) * shrink - low) / levels).clamp(min=torch.finfo(torch.float32).tiny)
        points = (-low / scales).round().clamp(0, levels)
        codes = ((grouped / scales[..., None]).round() + points[..., None]).clamp(0, levels)
        error = (((codes - points[..., None]) * scales[..., None] - grouped) ** 2).sum(-1)
        if best is None:
            best, best_error = (codes, scales, points), error
            continue
        better = error < best_error
        best = tuple(torch.where(better[..., None] if t.dim() == 3 else better, t, b)
                     for t, b in zip((codes, scales, points), best, strict=True))  # fmt: skip
        best_error = torch.minimum(error, best_error)
    codes, scales, points = best
    zeros = (middle - points) * scales
    return codes.to(torch.uint8).reshape(weight.shape), scales, zeros, points.to(torch.uint8)


def dequantize(codes: Any, *, middle: int) -> Any:
    """`(code - middle) * scale + zero` per group, as float32, for any codes with codes, scales and zeros."""
    import torch

    out, inputs = codes.codes.shape
    grouped = codes.codes.reshape(out, -1, codes.group_size).to(torch.float32) - middle
    return (grouped * codes.scales[..., None].float() + codes.zeros[..., None].float()).reshape(out, inputs)
