"""The replay block of every --json result: what produced it, enough to run it again and to explain why a
rerun differs. Versions, the device (CPU model and the flags its kernels choose by, or the GPU), the load
settings, the threads, and the model's identity (modelfs.identity: hashes, no weights read). Computed once
per loaded model; the batch a request shared is added per result.
"""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers", "peft", "xgrammar")
CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile")


@cache
def versions() -> dict[str, str]:
    found = {}
    for name in ("llmcli", *PACKAGES):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@cache
def cpu() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not flags:
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags], "machine": platform.machine()}


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"name": device, "cpu": cpu()}
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        info["gpu"] = {"name": torch.cuda.get_device_name(index),
                       "capability": ".".join(map(str, torch.cuda.get_device_capability(index))),
                       "cuda": torch.version.cuda}  # fmt: skip
    return info


def _revision(path: Any) -> str | None:
    """A Hub snapshot's commit: .../snapshots/<commit>/."""
    parts = list(path.parts)
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def environment(loaded: Any, *, adapter: Any = None) -> dict[str, Any]:
    """The replay block for results of `loaded` (without the batch, which is per result)."""
    cached = getattr(loaded, "_replay_environment", None)
    if cached is not None:
        return cached
    import torch

    from llmcli.modelfs.identity import identity

    source = loaded.source
    block = {
        "versions": versions(),
        "python": platform.python_version(),
        "device": device_info(loaded.device),
        "dtype": loaded.dtype,
        "attn_implementation": loaded.attn,
        "quantize": None if loaded.quantize == "none" else loaded.quantize,
        "quantization": loaded.quantization,
        "prepacked": loaded.prepacked,
        "split_lone_rows": loaded.split_lone_rows,
        "threads": torch.get_num_threads(),
        "dtype_choice": _measured(loaded.dtype_choice),
        "int4_tiles": _int4_tiles(loaded.model),
        "model": identity(source.path, gguf=source.gguf, revision=_revision(source.path)),
        "adapter": None if adapter is None else {"path": str(adapter), **identity(adapter)},
    }
    loaded._replay_environment = block
    return block


def _measured(choice: dict[str, Any] | None) -> dict[str, Any] | None:
    """The dtype measurement, less whether it came from the memo (which differs between two runs of it)."""
    return None if choice is None else {k: v for k, v in choice.items() if k != "cached"}


def _int4_tiles(model: Any) -> dict[str, Any] | None:
    """From how many rows int4 layers multiply dequantized tiles, and the packing read (None: no such layer)."""
    from llmcli.engine.quant import int4_tiles
    from llmcli.engine.quant.layers import Int4Linear

    layout = next((m.tiles for m in model.modules() if isinstance(m, Int4Linear) and m.tiles is not None), None)
    if layout is None:
        return None
    return {"from_rows": int4_tiles.MANY_ROWS, "block": layout.block, "split": layout.split}


def with_batch(block: dict[str, Any], *, size: int, position: int) -> dict[str, Any]:
    return {**block, "batch": {"size": size, "position": position}}
