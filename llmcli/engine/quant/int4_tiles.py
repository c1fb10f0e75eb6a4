"""Many rows through 4-bit weights: dequantized tiles and bfloat16 matrix products (prefill's path).

torch's CPU int4 kernel turns every code into float32 once per row block of four, so its time grows with the
rows: on the AVX-512 BF16 EPYC it costs ~0.45 ms a row for a 7B MLP weight (18,944 x 3,584), 233 ms for 512
rows. Dequantizing the codes of ~576 outputs at a time into a bfloat16 tile and multiplying with torch.mm
(oneDNN) took 120 ms there, and wins from 128 rows on (docs/quantization.md). The tile is cut straight from the kernel's
own packed buffer (read as engine.quant.cpu_packing learnt its layout), so nothing more is held; the tiles stay
off where no known layout reads back. A tile of 1M weights or more is dequantized by one compiled loop
(inductor; its cache in llmcli's home), smaller ones and any after a failed compile by plain operations.
Imports torch, engine.quant.cpu_packing and engine.quant.compiled_once.
"""

from __future__ import annotations

import torch

from llmcli.engine.quant.compiled_once import CompiledOnce
from llmcli.engine.quant.cpu_packing import Layout, transposed_codes

MANY_ROWS = 128  # from here on the tiles beat the kernel on every 7B shape; at 64 rows the kernel still won
TILE_WEIGHTS = 1 << 21  # weights a tile dequantizes at once: a few MB, cache-sized
COMPILE_FROM = 1 << 20  # a tile's weights from which its dequantizing is compiled (a 7B model's; no test model's)


def tile_outputs(inputs: int, block: int) -> int:
    """Outputs a tile holds: a whole number of blocks, about TILE_WEIGHTS weights."""
    return max(1, TILE_WEIGHTS // (inputs * block)) * block


class _Scratch:
    """One tile's buffers, reused tile after tile: fresh ones each time cost more in page faults than the
    arithmetic (a 7B MLP weight's 512-row product took 190 ms that way, 108 ms reusing them)."""

    def __init__(self, inputs: int, outputs: int, block: int) -> None:
        blocks = outputs // block
        self.codes = torch.empty(blocks, inputs, block, dtype=torch.uint8)
        self.blocked = torch.empty(blocks, inputs, block, dtype=torch.bfloat16)
        self.tile = torch.empty(inputs, outputs, dtype=torch.bfloat16)


def _float_blocks(blocks: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, split: bool) -> torch.Tensor:
    """The float32 weights [n, groups, group, block] of packed blocks [n, in, block / 2] with their scales and
    zeros [n, groups, 1, block]."""
    count, inputs, half = blocks.shape
    groups = scales.shape[1]
    low, high = blocks & 15, blocks >> 4
    codes = torch.cat([low, high], -1) if split else torch.stack([low, high], -1).flatten(-2)
    grouped = codes.view(count, groups, inputs // groups, 2 * half).to(torch.float32) - 8
    return grouped * scales.float() + zeros.float()


def _interleaved(weights: torch.Tensor) -> torch.Tensor:
    """[n, groups, group, block] weights as the tile [in, n * block] torch.mm takes."""
    count, groups, size, block = weights.shape
    return weights.view(count, groups * size, block).permute(1, 0, 2).reshape(groups * size, count * block)


def _blocks_tile(blocks: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, split: bool) -> torch.Tensor:
    """The bfloat16 tile of packed blocks, in one expression: what inductor compiles into one loop (a 2M-weight
    tile in ~0.3-0.65 ms against ~1.2-1.9 ms for the operations one by one)."""
    return _interleaved(_float_blocks(blocks, scales, zeros, split).to(torch.bfloat16))


def _pair_tile(high: tuple, low: tuple, split: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """int8's two halves (blocks, scales, zeros each) as one weight in two bfloat16 tiles, `top` and `rest`,
    whose sum holds the float32 weight to ~16 bits: finer than an 8-bit step, where one bfloat16 tile is not."""
    exact = _float_blocks(*high, split) + _float_blocks(*low, split)
    top = exact.to(torch.bfloat16)
    return _interleaved(top), _interleaved((exact - top.float()).to(torch.bfloat16))


COMPILED = CompiledOnce(_blocks_tile, what="int4 prefill tiles", fallback="dequantizing with plain torch operations")
PAIR_COMPILED = CompiledOnce(_pair_tile, what="int8 prefill tiles", fallback="dequantizing with plain torch operations")


def _full_blocks_tile(packed: torch.Tensor, scales_and_zeros: torch.Tensor, start: int, stop: int, layout: Layout,
                      scratch: _Scratch) -> torch.Tensor:  # fmt: skip
    """dequantized_tile for whole blocks: compiled from COMPILE_FROM weights on, else in the scratch buffers
    (the arithmetic runs block by block in the packed order, and only the finished tile is interleaved)."""
    inputs, half = packed.shape[1] * 2, layout.block // 2
    count, groups = stop - start, scales_and_zeros.shape[0]
    blocks, scales, zeros = _blocks_of(packed, scales_and_zeros, start, stop, layout)
    if count * inputs >= COMPILE_FROM and COMPILED.failed is None:
        return COMPILED(blocks, scales, zeros, layout.split)
    codes = scratch.codes[: blocks.shape[0]]
    low, high = (codes[..., :half], codes[..., half:]) if layout.split else (codes[..., 0::2], codes[..., 1::2])
    torch.bitwise_and(blocks, 15, out=low)
    torch.bitwise_right_shift(blocks, 4, out=high)
    blocked = scratch.blocked[: blocks.shape[0]]
    blocked.copy_(codes)
    by_group = blocked.view(-1, groups, inputs // groups, layout.block)
    by_group.sub_(8)
    torch.addcmul(zeros, by_group, scales, out=by_group)
    fits = count == scratch.tile.shape[1]  # the last tile may be narrower: a view of the buffer is not [in, count]
    tile = scratch.tile if fits else torch.empty(inputs, count, dtype=torch.bfloat16)
    tile.view(inputs, -1, layout.block).copy_(blocked.transpose(0, 1))
    return tile


def dequantized_tile(packed: torch.Tensor, scales_and_zeros: torch.Tensor, start: int, stop: int,
                     layout: Layout, scratch: _Scratch | None = None) -> torch.Tensor:  # fmt: skip
    """The bfloat16 weights [in, stop - start] (transposed, as torch.mm takes them) of outputs start..stop:
    `(code - 8) * scale + zero`, rounded once."""
    full = packed.shape[0] // layout.block * layout.block
    if stop <= full:
        inputs = packed.shape[1] * 2
        return _full_blocks_tile(packed, scales_and_zeros, start, stop, layout,
                                 scratch or _Scratch(inputs, stop - start, layout.block))  # fmt: skip
    return _tail_weights(packed, scales_and_zeros, start, stop, layout).to(torch.bfloat16)


def _spans(outputs: int, inputs: int, layout: Layout) -> tuple[list[tuple[int, int]], int]:
    """The tiles' (start, stop) outputs, and where the whole blocks end (a partial block after it, if any)."""
    full = outputs // layout.block * layout.block
    step = tile_outputs(inputs, layout.block)
    edges = [*range(0, full, step), full]
    spans = [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]
    return [*spans, *([(full, outputs)] if outputs > full else [])], full


def product(x: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor, layout: Layout) -> torch.Tensor:
    """`x @ weight.T` for bfloat16 rows x [rows, in], tile by tile."""
    outputs, inputs = packed.shape[0], packed.shape[1] * 2
    out = torch.empty(x.shape[0], outputs, dtype=torch.bfloat16)
    spans, full = _spans(outputs, inputs, layout)
    scratch = _Scratch(inputs, spans[0][1], layout.block) if full else None
    for start, stop in spans:
        tile = dequantized_tile(packed, scales_and_zeros, start, stop, layout, scratch if stop <= full else None)
        torch.mm(x, tile, out=out[:, start:stop])
    return out


def pair_product(x: torch.Tensor, halves: list[tuple[torch.Tensor, torch.Tensor]], layout: Layout) -> torch.Tensor:
    """`x @ weight.T` for int8's weight, the sum of two packed halves (packed, scales and zeros each): two
    bfloat16 products a tile (top and rest), added in float32. On a 7B MLP weight at 512 rows 236 ms against
    475 for the int4 kernel run once a half, with a smaller error than the kernel's against the exact product."""
    outputs, inputs = halves[0][0].shape[0], halves[0][0].shape[1] * 2
    out = torch.empty(x.shape[0], outputs, dtype=torch.float32)
    spans, full = _spans(outputs, inputs, layout)
    for start, stop in spans:
        if stop <= full:
            parts = [_blocks_of(packed, pairs, start, stop, layout) for packed, pairs in halves]
            big = (stop - start) * inputs >= COMPILE_FROM and PAIR_COMPILED.failed is None
            top, rest = (PAIR_COMPILED if big else _pair_tile)(*parts, layout.split)
        else:
            exact = sum(_tail_weights(packed, pairs, start, stop, layout) for packed, pairs in halves)
            top = exact.to(torch.bfloat16)
            rest = (exact - top.float()).to(torch.bfloat16)
        out[:, start:stop] = torch.mm(x, top).float() + torch.mm(x, rest).float()
    return out.to(torch.bfloat16)


def _blocks_of(packed: torch.Tensor, scales_and_zeros: torch.Tensor, start: int, stop: int,
               layout: Layout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Whole blocks start..stop as _float_blocks takes them: packed [n, in, block / 2], scales and zeros
    [n, groups, 1, block] (contiguous: the arithmetic over strided views ran 8x slower)."""
    inputs, groups = packed.shape[1] * 2, scales_and_zeros.shape[0]
    blocks = packed.view(-1)[start * inputs // 2 : stop * inputs // 2].view(-1, inputs, layout.block // 2)
    pairs = scales_and_zeros[:, start:stop].view(groups, -1, layout.block, 2).permute(1, 0, 2, 3).unsqueeze(2)
    return blocks, pairs[..., 0].contiguous(), pairs[..., 1].contiguous()


def _tail_weights(packed: torch.Tensor, scales_and_zeros: torch.Tensor, start: int, stop: int,
                  layout: Layout) -> torch.Tensor:  # fmt: skip
    """The float32 weights [in, stop - start] of outputs in the partial last block."""
    codes = transposed_codes(packed, start, stop, layout)
    groups = scales_and_zeros.shape[0]
    grouped = codes.to(torch.float32).view(groups, -1, codes.shape[1]) - 8
    pairs = scales_and_zeros[:, start:stop].float().unsqueeze(1)
    return (grouped * pairs[..., 0] + pairs[..., 1]).view(codes.shape)
