"""Weight-only codes of any width (4 or 8 bits): a weight [out, in] cut into groups of `group_size` inputs, each
group with a scale and a zero, a weight `(code - middle) * scale + zero` with `middle = 2^(bits - 1)`.

`search` finds each group's scale and zero as llama.cpp's K-quants do (make_qkx2_quants): a few candidate steps
around the group's range, the codes each gives, and the least-squares scale and zero for those codes; the pair
with the least (importance-weighted) squared error wins. On weights that sit on no grid it cut the default
model's KL by a quarter against plain min/max rounding (docs/quantization.md). The scale and zero are rounded
to bfloat16 (what the kernel holds) before the final codes are chosen, so every weight stays within half a
step of its code whatever the kernel keeps. `importance` is a weight per input column (mean squared activation
over a calibration text: llama.cpp's importance matrix); without it every input counts the same.
Pure arithmetic on torch tensors.
"""

from __future__ import annotations

from typing import Any

CANDIDATES = (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)  # steps tried: the range over (levels - 1 + c); K-quants' rmin -1
TINY = 1e-30


def _grouped(weight: Any, group_size: int) -> Any:
    import torch

    out, inputs = weight.shape
    return weight.detach().to(torch.float32).reshape(out, inputs // group_size, group_size)


def _bf16(values: Any) -> Any:
    import torch

    return values.to(torch.bfloat16).to(torch.float32)


def _least_squares(x: Any, weights: Any, codes: Any) -> tuple[Any, Any]:
    """The scale and minimum that best fit `codes * scale + minimum` to x, each group on its own."""
    import torch

    sw, sl, sl2 = weights.sum(-1), (weights * codes).sum(-1), (weights * codes * codes).sum(-1)
    sx, sxl = (weights * x).sum(-1), (weights * x * codes).sum(-1)
    det = sw * sl2 - sl * sl
    solvable = det > 0
    det = torch.where(solvable, det, torch.ones_like(det))
    scale = torch.where(solvable, (sw * sxl - sx * sl) / det, torch.zeros_like(det))
    minimum = torch.where(solvable, (sl2 * sx - sl * sxl) / det, sx / sw.clamp(min=TINY))
    return scale, minimum


def _rounded(x: Any, weights: Any, scale: Any, minimum: Any, levels: int) -> tuple[Any, Any]:
    """The nearest codes for a scale and minimum, and their weighted squared error a group."""
    codes = ((x - minimum[..., None]) / scale.clamp(min=TINY)[..., None]).round().clamp(0, levels)
    return codes, (weights * (codes * scale[..., None] + minimum[..., None] - x) ** 2).sum(-1)


def search(weight: Any, group_size: int, *, bits: int, importance: Any = None) -> tuple[Any, Any, Any]:
    """(codes [out, in] uint8, scales, zeros [out, in / group]), scales and zeros exact in bfloat16."""
    import torch

    levels, middle = 2**bits - 1, 2 ** (bits - 1)
    x = _grouped(weight, group_size)
    if importance is None:
        weights = torch.ones_like(x)
    else:
        weights = importance.to(torch.float32).clamp(min=0).reshape(1, x.shape[1], group_size).expand_as(x)
    low, high = x.amin(-1), x.amax(-1)
    spread = (high - low).clamp(min=TINY)
    scale, minimum = spread / levels, low
    _, best = _rounded(x, weights, scale, minimum, levels)
    for widening in CANDIDATES:
        codes = ((x - low[..., None]) * ((levels - 1 + widening) / spread)[..., None]).round().clamp(0, levels)
        fit_scale, fit_minimum = _least_squares(x, weights, codes)
        _, error = _rounded(x, weights, fit_scale, fit_minimum, levels)
        better = (error < best) & (fit_scale > 0)
        scale, minimum = torch.where(better, fit_scale, scale), torch.where(better, fit_minimum, minimum)
        best = torch.where(better, error, best)
    scale = _bf16(scale.clamp(min=torch.finfo(torch.bfloat16).tiny))
    zero = _bf16(minimum + middle * scale)
    codes, _ = _rounded(x, torch.ones_like(x), scale, zero - middle * scale, levels)
    return codes.to(torch.uint8).reshape(weight.shape), scale, zero


def dequantize(codes: Any, *, middle: int) -> Any:
    """`(code - middle) * scale + zero` per group, as float32, for any codes with codes, scales and zeros."""
    import torch

    out, inputs = codes.codes.shape
    grouped = codes.codes.reshape(out, -1, codes.group_size).to(torch.float32) - middle
    return (grouped * codes.scales[..., None].float() + codes.zeros[..., None].float()).reshape(out, inputs)
