"""Which dtype and which matrix product a decoding step is faster with on this CPU, measured rather than read
from its flags.

Flags mispredict: an Intel VM listed avx512_bf16 and amx_bf16 and computed bfloat16 products no faster than
float32 (issue 38), where an AMD one with the same flags computed them twice as fast. So the first load for
generation on a CPU times the products a decoding step is mostly made of, one row (generate, chat) or sixteen
(serve) by weights of the model's MLP shape, as many of them as it takes to pass the caches (a step streams
all of a model's weights from memory; one small weight would sit in the cache and favour float32): in bfloat16
and float32, each through torch's `F.linear` ("plain") and through oneDNN with the weights reordered once
("onednn", engine.load.prepack). It takes well under a second, and the result is kept in llmcli's home per CPU
model, flags, torch version, shape and rows (modelfs.memo), so later loads read it. The load takes the fastest
candidate its flags leave: `--dtype` keeps one dtype, `--compile` and serve's `--no-prepack` keep the plain
product, serve's `--prepack` the oneDNN one. `LLMCLI_DTYPE_PROBE=0` turns it off (the flags decide, as
before). The figures are in `--json`'s `model.dtype_choice` and in serve's `ps`.
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
PRODUCTS = ("plain", "onednn")
MOST_WEIGHTS = 1 << 25  # 32M (128 MB in float32): a 7B MLP weight is cut to this
LEAST_WEIGHTS = 1 << 24  # 16M (64 MB in float32): past the caches of these machines, as a step's weights are
REPEATS = 5


def enabled() -> bool:
    return os.environ.get("LLMCLI_DTYPE_PROBE", "1") != "0"


def name_of(dtype: str, product: str) -> str:
    """A candidate's name in the record's "ms": "bfloat16", "float32+onednn"."""
    return dtype if product == "plain" else f"{dtype}+{product}"


def measured(config: dict[str, Any], *, rows: int) -> dict[str, Any] | None:
    """{"dtype", "product" (the fastest of all), "ms" per candidate, "shape", "rows", "cpu", "measured",
    "cached"}; None without an MLP shape."""
    from llmcli.engine.load.environment import cpu

    shape = _shape(config)
    if shape is None:
        return None
    import torch

    here = cpu()
    products = PRODUCTS if torch.backends.mkldnn.is_available() else ("plain",)
    names = {name_of(d, p): (d, p) for d in CANDIDATES for p in products}
    key = (f"{here['model']}|{','.join(here['flags'])}|torch {torch.__version__}|{shape[0]}x{shape[1]}|rows {rows}"
           f"|{','.join(products)}")  # fmt: skip
    known = read_memo(MEMO)
    kept = known.get(key)
    if isinstance(kept, dict) and set(kept.get("ms") or ()) == set(names) and kept.get("dtype") in CANDIDATES:
        return kept | {"cached": True}
    ms = {name: round(1e3 * _seconds(shape, rows, *names[name]), 3) for name in names}
    dtype, product = names[min(ms, key=ms.get)]
    record = {"dtype": dtype, "product": product, "ms": ms, "shape": list(shape), "rows": rows,
              "cpu": here["model"], "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    write_memo(MEMO, {**known, key: record})
    return record | {"cached": False}


def kept() -> list[dict[str, Any]]:
    """Every measurement kept in llmcli's home (`llmcli models`): each record with its CPU's flags and torch
    version from its key, newest first; a record that does not read as one is left out. Imports no torch."""
    records = []
    for key, record in read_memo(MEMO).items():
        parts = key.split("|") if isinstance(key, str) else []
        if len(parts) < 5 or not isinstance(record, dict) or not isinstance(record.get("ms"), dict):
            continue
        flags, torch_version = parts[1].split(","), parts[2].removeprefix("torch ")
        records.append({**record, "product": record.get("product", "plain"), "flags": flags, "torch": torch_version})
    return sorted(records, key=lambda r: str(r.get("measured", "")), reverse=True)


def chosen(record: dict[str, Any], *, dtypes: tuple[str, ...], products: tuple[str, ...]) -> dict[str, Any] | None:
    """The record with "dtype" and "product" the fastest candidate among those allowed (None: none measured)."""
    ms = record.get("ms") or {}
    allowed = [(ms[name_of(d, p)], d, p) for d in dtypes for p in products if name_of(d, p) in ms]
    if not allowed:
        return None
    _, dtype, product = min(allowed)
    return record | {"dtype": dtype, "product": product}


def _shape(config: dict[str, Any]) -> tuple[int, int] | None:
    geo = geometry(config)
    if not geo.hidden:
        return None
    out = geo.intermediate or 4 * geo.hidden
    return max(1, min(out, MOST_WEIGHTS // geo.hidden)), geo.hidden


def _seconds(shape: tuple[int, int], rows: int, dtype: str, product: str) -> float:
    """The median of REPEATS passes of `x @ weight.T` over enough weights of `shape` to pass the caches
    (after one pass to warm up), through `product`."""
    import torch

    kind = getattr(torch, dtype)
    count = max(1, -(-LEAST_WEIGHTS // (shape[0] * shape[1])))
    weights = [torch.full(shape, 0.01, dtype=kind) for _ in range(count)]
    multiply = torch.nn.functional.linear
    if product == "onednn":
        weights = [torch.ops.mkldnn._reorder_linear_weight(w, 8) for w in weights]
        multiply = _onednn
    x = torch.full((rows, shape[1]), 0.5, dtype=kind)
    times = []
    with torch.no_grad():
        for repeat in range(REPEATS + 1):
            started = time.perf_counter()
            for weight in weights:
                multiply(x, weight)
            if repeat:
                times.append(time.perf_counter() - started)
    return sorted(times)[REPEATS // 2]


def _onednn(x: Any, packed: Any) -> Any:
    import torch

    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
