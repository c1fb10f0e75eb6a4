"""engine.quant.codes' search at a speed a 7B load can afford: compiled by inductor (one fused loop a
candidate: about 20x the plain torch operations, as fast as the min/max rounding it replaced) for weights
large enough to repay the compile, which inductor's cache keeps across processes (in llmcli's home:
modelfs.compile_cache). Smaller weights, and any
weight once a compile has failed, take the plain operations (codes equal but for a tie's rounding).

The choice depends on the weight's size alone, so `llmcli quantize` and `--quantize` take the same path for
the same weight and save and load the same codes. Imports torch lazily; may import engine.quant.codes and
engine.quant.compiled_once.
"""

from __future__ import annotations

from typing import Any

from llmcli.engine.quant import codes
from llmcli.engine.quant.compiled_once import CompiledOnce

COMPILE_FROM = 1 << 20  # weights (1M) from which the search is compiled: all of a 7B model's layers (its 1.8M k/v
# projections took 49 ns a weight eager, 11 compiled), none of the 135M's
CHUNK = 1 << 24  # weights searched at once: a 176M-weight output layer searched whole took ~1 GB of temporaries


COMPILED = CompiledOnce(codes.search, what="code search", fallback="searching with plain torch operations (slower)",
                        dynamic=True)  # fmt: skip


def search(weight: Any, group_size: int, *, bits: int, importance: Any = None) -> tuple[Any, Any, Any]:
    """engine.quant.codes.search, compiled for a large weight, CHUNK weights (whole rows) at a time: groups are
    searched each on its own, so the codes are the same, and the float32 temporaries stay bounded."""
    import torch

    compiled = weight.numel() >= COMPILE_FROM and COMPILED.failed is None  # one path for the whole weight
    rows = max(1, CHUNK // weight.shape[1])
    if weight.shape[0] <= rows:
        return _search(weight, group_size, bits=bits, importance=importance, compiled=compiled)
    parts = [_search(weight[start : start + rows], group_size, bits=bits, importance=importance, compiled=compiled)
             for start in range(0, weight.shape[0], rows)]  # fmt: skip
    return tuple(torch.cat(found) for found in zip(*parts, strict=True))


def _search(weight: Any, group_size: int, *, bits: int, importance: Any, compiled: bool) -> tuple[Any, Any, Any]:
    if not compiled or COMPILED.failed is not None:
        return codes.search(weight, group_size, bits=bits, importance=importance)
    return COMPILED(weight, group_size, bits=bits, importance=importance)
