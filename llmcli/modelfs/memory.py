"""Weight and KV-cache sizes from counts alone, and how much memory the target device has."""

from __future__ import annotations

import sys
from typing import Any

from llmcli.modelfs.config import Geometry

BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "int8": 1.0, "int4": 0.5}


def kv_bytes_per_token(geo: Geometry, bytes_per_value: float = 2.0) -> int | None:
    """2 (K and V) × layers × KV heads × head_dim × bytes."""
    if not (geo.layers and geo.kv_heads and geo.head_dim):
        return None
    return int(2 * geo.layers * geo.kv_heads * geo.head_dim * bytes_per_value)


def device_memory(device: str = "auto") -> dict[str, Any]:
    """Free memory of the device a model would load onto: CUDA's when torch is loaded and sees one."""
    if device != "cpu" and "torch" in sys.modules:
        torch = sys.modules["torch"]
        try:
            wants_cuda = device in ("auto", "cuda") or device.startswith("cuda:")
            if wants_cuda and torch.cuda.is_available():
                index = int(device.split(":")[1]) if ":" in device else 0
                free, total = torch.cuda.mem_get_info(index)
                return {"device": f"cuda:{index}", "free_bytes": int(free), "total_bytes": int(total)}
        except Exception:  # noqa: BLE001 - a broken CUDA setup falls back to host memory
            pass
    import psutil

    vm = psutil.virtual_memory()
    return {"device": "cpu", "free_bytes": int(vm.available), "total_bytes": int(vm.total)}


def memory_report(
    params: int | None, geo: Geometry, context: int | None, batch: int, device: str, *, budget: int | None = None
) -> dict[str, Any]:
    """Weights and KV cache sizes, and whether they fit: in the device's free memory, or within `budget` (the
    sum of --max-memory's devices, disk left out) when one is given."""
    weights = {k: int(params * v) for k, v in BYTES_PER_PARAM.items()} if params else {}
    per_token = kv_bytes_per_token(geo)
    ctx = context or geo.context
    kv_total = per_token * ctx * batch if per_token and ctx else None
    dev = device_memory(device)
    report: dict[str, Any] = {
        "weights_bytes": weights,
        "kv_cache": {
            "dtype": "bfloat16",
            "bytes_per_token": per_token,
            "context": ctx,
            "batch": batch,
            "bytes": kv_total,
        },
        "device": dev,
    }
    if weights and kv_total is not None:
        need = weights["bfloat16"] + kv_total
        report["verdict"] = {
            "dtype": "bfloat16",
            "needed_bytes": need,
            "fits": need <= (dev["free_bytes"] if budget is None else budget),
            "within": "free memory" if budget is None else "--max-memory",
        }
    return report
