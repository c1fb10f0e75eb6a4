"""engine.quant.codes' search at a speed a 7B load can afford: compiled by inductor (one fused loop a
candidate: about 20x the plain torch operations, as fast as the min/max rounding it replaced) for weights
large enough to repay the compile, which inductor's cache keeps across processes (in llmcli's home:
modelfs.compile_cache). Smaller weights, and any
weight once a compile has failed, take the plain operations (codes equal but for a tie's rounding).

The choice depends on the weight's size alone, so `llmcli quantize` and `--quantize` take the same path for
the same weight and save and load the same codes. Imports torch lazily; may import engine.quant.codes.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from llmcli.engine.quant import codes

COMPILE_FROM = 1 << 20  # weights (1M) from which the search is compiled: all of a 7B model's layers (its 1.8M k/v
# projections took 49 ns a weight eager, 11 compiled), none of the 135M's
CHUNK = 1 << 24  # weights searched at once: a 176M-weight output layer searched whole took ~1 GB of temporaries


@functools.cache
def _compiled() -> Any:
    import torch

    from llmcli.modelfs.compile_cache import use_llmcli_cache

    use_llmcli_cache()
    return torch.compile(codes.search, dynamic=True)


_failed: list[str] = []
_said: list[bool] = []


def search(weight: Any, group_size: int, *, bits: int, importance: Any = None) -> tuple[Any, Any, Any]:
    """engine.quant.codes.search, compiled for a large weight, CHUNK weights (whole rows) at a time: groups are
    searched each on its own, so the codes are the same, and the float32 temporaries stay bounded."""
    import torch

    compiled = weight.numel() >= COMPILE_FROM and not _failed  # one path for the whole weight
    rows = max(1, CHUNK // weight.shape[1])
    if weight.shape[0] <= rows:
        return _search(weight, group_size, bits=bits, importance=importance, compiled=compiled)
    parts = [_search(weight[start : start + rows], group_size, bits=bits, importance=importance, compiled=compiled)
             for start in range(0, weight.shape[0], rows)]  # fmt: skip
    return tuple(torch.cat(found) for found in zip(*parts, strict=True))


def _search(weight: Any, group_size: int, *, bits: int, importance: Any, compiled: bool) -> tuple[Any, Any, Any]:
    if not compiled or _failed:
        return codes.search(weight, group_size, bits=bits, importance=importance)
    try:
        started = time.perf_counter()
        found = _compiled()(weight, group_size, bits=bits, importance=importance)
        if not _said:
            _said.append(True)
            _say(f"the code search compiled and ran on its first weight in {time.perf_counter() - started:.1f} s "
                 "(inductor's cache in llmcli's home keeps the compile for later runs)")  # fmt: skip
        return found
    except Exception as exc:  # inductor's failures (no compiler, a tracing error) have no common type
        from llmcli.errors import squash
        from llmcli.output import stderr_text

        _failed.append(squash(exc))
        stderr_text(f"the compiled code search failed ({_failed[0]}); searching with plain torch operations (slower)")
        return codes.search(weight, group_size, bits=bits, importance=importance)


def _say(text: str) -> None:
    from llmcli.output import stderr_text

    stderr_text(text)
