"""Where the layers of a model too large for one device would go, proposed before anything loads:
accelerate's infer_auto_device_map on the meta model, with this machine's free memory (or --max-memory)."""

from __future__ import annotations

import re
from typing import Any


def accelerate_limits(max_memory: dict[str, str]) -> dict[Any, int]:
    """--max-memory's limits as accelerate takes them: GPUs by index ('cuda:0' → 0), the rest by name; the
    amounts in bytes (accelerate's own parser knows no TiB)."""
    from llmcli.plan import memory_amount

    return {int(k[5:]) if k.startswith("cuda:") else k: memory_amount(v) for k, v in max_memory.items()}


def device_name(where: Any) -> str:
    """accelerate's name for a device as llmcli writes it: 0 → 'cuda:0'; 'cpu' and 'disk' as they are."""
    return f"cuda:{where}" if isinstance(where, int) else str(where)


def propose(meta_model: Any, *, max_memory: dict[str, str] | None, dtype: str = "bfloat16") -> dict[str, Any]:
    """Per device (cuda:N, cpu, disk, in that order): the modules placed there and their bytes in `dtype`."""
    import torch
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes, get_max_memory

    limits = accelerate_limits(max_memory) if max_memory else None
    budget = get_max_memory(limits)
    mapping = infer_auto_device_map(
        meta_model,
        max_memory=budget,
        no_split_module_classes=list(getattr(meta_model, "_no_split_modules", None) or []),
        dtype=getattr(torch, dtype),
    )
    sizes = compute_module_sizes(meta_model, dtype=getattr(torch, dtype))
    devices: dict[str, dict[str, Any]] = {}
    for name, where in mapping.items():
        device = device_name(where)
        entry = devices.setdefault(device, {"device": device, "modules": [], "bytes": 0})
        entry["modules"].append(name)
        entry["bytes"] += int(sizes.get(name, 0))
    order = sorted(devices.values(), key=lambda d: (d["device"] == "disk", d["device"] == "cpu", d["device"]))
    for entry in order:
        entry["modules"] = compress(entry["modules"])
    limits_out = {device_name(k): int(v) for k, v in budget.items()}
    return {"dtype": dtype, "max_memory_bytes": limits_out, "devices": order}


def compress(names: list[str]) -> list[str]:
    """'model.layers.0' ... 'model.layers.17' → 'model.layers.0-17'; other names as they are."""
    out: list[str] = []
    run: tuple[str, int, int] | None = None
    for name in names:
        match = re.fullmatch(r"(.*\.)(\d+)", name)
        if match and run and run[0] == match.group(1) and run[2] + 1 == int(match.group(2)):
            run = (run[0], run[1], int(match.group(2)))
            continue
        if run:
            out.append(f"{run[0]}{run[1]}" + (f"-{run[2]}" if run[2] != run[1] else ""))
            run = None
        if match:
            run = (match.group(1), int(match.group(2)), int(match.group(2)))
        else:
            out.append(name)
    if run:
        out.append(f"{run[0]}{run[1]}" + (f"-{run[2]}" if run[2] != run[1] else ""))
    return out
