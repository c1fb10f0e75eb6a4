"""Which dtype a decoding step is faster in on this CPU, measured rather than read from its flags.

Flags mispredict: an Intel VM listed avx512_bf16 and amx_bf16 and computed bfloat16 products no faster than
float32 (issue 38), where an AMD one with the same flags computed them twice as fast. So the first load for
generation on a CPU times the products a decoding step is mostly made of, one row (generate, chat) or sixteen
(serve) by weights of the model's MLP shape, as many of them as it takes to pass the caches (a step streams
all of a model's weights from memory; one small weight would sit in the cache and favour float32), in
bfloat16 and in float32, and takes the faster. It takes well
under a second, and the result is kept in llmcli's home per CPU model, flags, torch version, shape and rows
(modelfs.memo), so later loads read it. `LLMCLI_DTYPE_PROBE=0` turns it off (the flags decide, as before);
`--dtype` always wins. The figures are in `--json`'s `model.dtype_choice` and in serve's `ps`.
Imports torch lazily; may import modelfs and engine.load.environment.
"""

from __future__ import annotations

import os
import time
from typing import Any

from llmcli.modelfs.config import geometry
from llmcli.modelfs.memo import read_memo, write_memo

MEMO = "dtype-probe.json"
CANDIDATES = ("bfloat16", "float32")
MOST_WEIGHTS = 1 << 25  # 32M (128 MB in float32): a 7B MLP weight is cut to this
LEAST_WEIGHTS = 1 << 24  # 16M (64 MB in float32): past the caches of these machines, as a step's weights are
REPEATS = 5


def enabled() -> bool:
    return os.environ.get("LLMCLI_DTYPE_PROBE", "1") != "0"


def measured(config: dict[str, Any], *, rows: int) -> dict[str, Any] | None:
    """{"dtype", "ms" per candidate, "shape", "rows", "cpu", "measured"}; None without an MLP shape."""
    from llmcli.engine.load.environment import cpu

    shape = _shape(config)
    if shape is None:
        return None
    import torch

    here = cpu()
    key = f"{here['model']}|{','.join(here['flags'])}|torch {torch.__version__}|{shape[0]}x{shape[1]}|rows {rows}"
    known = read_memo(MEMO)
    if isinstance(known.get(key), dict) and known[key].get("dtype") in CANDIDATES:
        return known[key] | {"cached": True}
    ms = {dtype: round(1e3 * _seconds(shape, rows, dtype), 3) for dtype in CANDIDATES}
    record = {"dtype": min(ms, key=ms.get), "ms": ms, "shape": list(shape), "rows": rows, "cpu": here["model"],
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    write_memo(MEMO, {**known, key: record})
    return record | {"cached": False}


def _shape(config: dict[str, Any]) -> tuple[int, int] | None:
    geo = geometry(config)
    if not geo.hidden:
        return None
    out = geo.intermediate or 4 * geo.hidden
    return max(1, min(out, MOST_WEIGHTS // geo.hidden)), geo.hidden


def _seconds(shape: tuple[int, int], rows: int, dtype: str) -> float:
    """The median of REPEATS passes of `x @ weight.T` over enough weights of `shape` to pass the caches
    (after one pass to warm up)."""
    import torch

    kind = getattr(torch, dtype)
    count = max(1, -(-LEAST_WEIGHTS // (shape[0] * shape[1])))
    weights = [torch.full(shape, 0.01, dtype=kind) for _ in range(count)]
    x = torch.full((rows, shape[1]), 0.5, dtype=kind)
    times = []
    with torch.no_grad():
        for repeat in range(REPEATS + 1):
            started = time.perf_counter()
            for weight in weights:
                torch.nn.functional.linear(x, weight)
            if repeat:
                times.append(time.perf_counter() - started)
    return sorted(times)[REPEATS // 2]
