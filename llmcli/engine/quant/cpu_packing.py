"""torch's CPU int4 packing (`_convert_weight_to_int4pack_for_cpu`), read and written here with plain tensor
operations: read, so that many-row products can cut dequantized tiles straight from the packed buffer
(engine.quant.int4_tiles); written, because torch's own packer takes int32 codes, and widening a 7B model's
6.7G codes to int32 cost more than the packing (2.3 ns a weight against ~0.5 here).

The layout depends on the kernel torch dispatches (blocks of 64 outputs whose bytes hold outputs j and j + 32
on AVX-512, blocks of 32 on AVX2, neighbouring pairs otherwise, and pairs in a last partial block); `layout()`
learns it by packing a probe with torch's packer once and reading it back, and `pack()` writes it only after
checking that it writes what torch writes, falling back to torch's packer otherwise. Imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch


@dataclass(frozen=True)
class Layout:
    """The CPU kernel's packing: full blocks of `block` outputs, each input's byte holding output j in its low
    nibble and j + block/2 in its high one when `split`, neighbours j, j+1 otherwise; a last, partial block
    always holds neighbours."""

    block: int
    split: bool


def torch_pack(codes: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)


def _probe() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 16, (64 * 3 + 16, 8), generator=generator, dtype=torch.uint8)


@cache
def layout() -> Layout | None:
    """The layout torch's CPU packing uses here, read back from a probe; None when none of the known ones fits."""
    probe = _probe()
    packed = torch_pack(probe)
    for candidate in (Layout(64, split=True), Layout(32, split=True), Layout(32, split=False)):
        if torch.equal(codes_of(packed, 0, probe.shape[0], candidate), probe):
            return candidate
    return None


@cache
def _writes_as_torch() -> Layout | None:
    known = layout()
    if known is None:
        return None
    probe = _probe()
    return known if torch.equal(_packed(probe, known), torch_pack(probe)) else None


def pack(codes: torch.Tensor) -> torch.Tensor:
    """codes [out, in] (uint8, 0..15) packed for torch's CPU int4 kernel: by `_packed` where it was checked to
    write what torch's packer writes, by torch's packer otherwise."""
    known = _writes_as_torch()
    return torch_pack(codes) if known is None else _packed(codes, known)


def _packed(codes: torch.Tensor, layout: Layout) -> torch.Tensor:
    outputs, inputs = codes.shape
    full = outputs // layout.block * layout.block
    half = layout.block // 2
    flat = torch.empty(outputs * inputs // 2, dtype=torch.uint8)
    if full:
        blocks = codes[:full].view(-1, layout.block, inputs)
        low, high = (blocks[:, :half], blocks[:, half:]) if layout.split else (blocks[:, 0::2], blocks[:, 1::2])
        target = flat[: full * inputs // 2].view(-1, inputs, half)
        torch.bitwise_or(low, high << 4, out=target.transpose(1, 2))
    if outputs > full:
        tail = codes[full:]
        torch.bitwise_or(tail[0::2], tail[1::2] << 4, out=flat[full * inputs // 2 :].view(inputs, -1).t())
    return flat.view(outputs, inputs // 2)


def codes_of(packed: torch.Tensor, start: int, stop: int, layout: Layout) -> torch.Tensor:
    """The codes [stop - start, in] (uint8) of outputs start..stop; `start` on a block's edge."""
    return transposed_codes(packed, start, stop, layout).t()


def transposed_codes(packed: torch.Tensor, start: int, stop: int, layout: Layout) -> torch.Tensor:
    """The codes [in, stop - start] (uint8) of outputs start..stop, contiguous; `start` on a block's edge.
    A block is [in, block] in the packed buffer already, so this only interleaves blocks."""
    outputs, inputs = packed.shape[0], packed.shape[1] * 2
    full = outputs // layout.block * layout.block
    parts = []
    if start < min(stop, full):
        end = min(stop, full)
        blocks = packed.view(-1)[start * inputs // 2 : end * inputs // 2].view(-1, inputs, layout.block // 2)
        low, high = blocks & 15, blocks >> 4
        joined = torch.cat([low, high], -1) if layout.split else torch.stack([low, high], -1).flatten(-2)
        parts.append(joined.transpose(0, 1).reshape(inputs, end - start))
    if stop > full:
        tail = packed.view(-1)[full * inputs // 2 :].view(inputs, (outputs - full) // 2)
        pairs = torch.stack([tail & 15, tail >> 4], -1).flatten(-2)
        parts.append(pairs[:, max(start - full, 0) : stop - full])
    return torch.cat(parts, 1) if len(parts) > 1 else parts[0].contiguous()
