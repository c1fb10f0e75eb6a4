"""The quantized linear layers themselves: torch modules over torch's int4 weight-only kernels.

Imported only once a model loads (this module imports torch at its top). A layer keeps its input's dtype
outside and hands the kernel bfloat16 inside (the kernel's fast path).
"""

from __future__ import annotations

from typing import Any

import torch

from llmcli.engine.quant import cpu_packing, int4_tiles
from llmcli.engine.quant.int4 import Int4Codes, pack
from llmcli.engine.quant.int8 import Int8Codes


class Int4Linear(torch.nn.Module):
    """`x @ weight.T + bias` from 4-bit codes packed for torch's kernel on `device`; on a CPU, many rows go
    through dequantized bfloat16 tiles (engine.quant.int4_tiles) unless `tiles` is False."""

    def __init__(self, codes: Int4Codes, bias: Any, *, device: str, tiles: bool = True) -> None:
        super().__init__()
        self.out_features, self.in_features = codes.codes.shape
        self.group_size = codes.group_size
        self.register_buffer("packed", pack(codes.codes, device=device))
        pairs = torch.stack([codes.scales.t(), codes.zeros.t()], dim=-1)  # [groups, out, 2]
        self.register_buffer("scales_and_zeros", pairs.to(device=device, dtype=torch.bfloat16).contiguous())
        self.bias = None if bias is None else torch.nn.Parameter(bias.to(device), requires_grad=False)
        on_gpu = device.startswith("cuda")
        self._mm = torch.ops.aten._weight_int4pack_mm if on_gpu else torch.ops.aten._weight_int4pack_mm_for_cpu
        self.tiles = cpu_packing.layout() if tiles and not on_gpu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if _many_rows(flat, self.tiles):
            out = int4_tiles.product(flat, self.packed, self.scales_and_zeros, self.tiles).to(x.dtype)
        else:
            out = self._mm(flat, self.packed, self.group_size, self.scales_and_zeros).to(x.dtype)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4, group {self.group_size}"


class Int8Linear(torch.nn.Module):
    """`x @ weight.T + bias` from 8-bit codes, as the sum of their two 4-bit halves (engine.quant.int8); on a
    CPU, many rows through both halves' weight in two bfloat16 tiles (engine.quant.int4_tiles)."""

    def __init__(self, codes: Int8Codes, bias: Any, *, device: str) -> None:
        super().__init__()
        self.out_features, self.in_features = codes.codes.shape
        self.group_size = codes.group_size
        high, low = codes.halves()
        # not a half's own tiles: a bfloat16 tile holds a weight to 1/512 of itself, up to a quarter of an 8-bit
        # step; many rows take both halves' weight in two bfloat16 tiles instead (int4_tiles.pair_product)
        self.high = Int4Linear(high, None, device=device, tiles=False)
        self.low = Int4Linear(low, None, device=device, tiles=False)
        self.tiles = cpu_packing.layout() if not device.startswith("cuda") else None
        self.bias = None if bias is None else torch.nn.Parameter(bias.to(device), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if _many_rows(flat, self.tiles):
            halves = [(half.packed, half.scales_and_zeros) for half in (self.high, self.low)]
            out = int4_tiles.pair_product(flat, halves, self.tiles).to(x.dtype).reshape(*x.shape[:-1], -1)
        else:
            out = self.high(x) + self.low(x)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8, group {self.group_size}"


def _many_rows(flat: torch.Tensor, tiles: cpu_packing.Layout | None) -> bool:
    """Whether the dequantized tiles take these rows. A compiled graph keeps the kernel (one op to trace), asked
    before the rows are: a traced row count compared with MANY_ROWS bounds the graph below it (a library for
    serve's rows could not be built for 2 to 256 of them)."""
    return tiles is not None and not torch.compiler.is_compiling() and flat.shape[0] >= int4_tiles.MANY_ROWS


def held_bytes(module: torch.nn.Module) -> int:
    """What a layer holds in memory: its packed codes, scales and zeros, and bias."""
    return sum(t.numel() * t.element_size() for t in (*module.buffers(), *module.parameters()))
