"""Reading a safetensors shard one tensor at a time with plain file reads.

safetensors' `safe_open` maps the whole file, and every page a read touches stays in the process's resident
set until the file is closed: quantizing a 4 GB shard through it held the shard in RSS on top of the codes
being built. Here the header is first validated by safetensors itself (`safe_open`, which reads no tensor
data), then each tensor is read into its own buffer, and freed once the caller is done with it. glibc keeps
freed medium-sized blocks for reuse; `give_back_memory()` returns them to the system every 512 MB of weights
read (on the 7B shape ~40 MB a layer stayed resident otherwise; trimming after every layer cost 10 s).
"""

from __future__ import annotations

import ctypes
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError

# Every dtype safetensors writes that torch has (safetensors' own table); F4/F6 have no torch dtype.
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
          "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
          "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
          "F8_E8M0": "float8_e8m0fnu", "C64": "complex64"}  # fmt: skip


def tensors(path: Path) -> Iterator[tuple[str, Any]]:
    """(name, tensor) for each tensor of the shard, in file order; each tensor owns its memory."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt"):  # validates the header (offsets, sizes, dtypes); reads no data
        pass
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
        header.pop("__metadata__", None)
        base = 8 + length
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            start, end = info["data_offsets"]
            fh.seek(base + start)
            data = bytearray(end - start)
            fh.readinto(data)
            if not hasattr(torch, DTYPES.get(info["dtype"], "")):
                raise LlmcliError(f"tensor {name} is {info['dtype']}, which torch cannot hold", path=path)
            dtype = getattr(torch, DTYPES[info["dtype"]])
            yield (
                name,
                torch.frombuffer(data, dtype=dtype).reshape(info["shape"])
                if data
                else torch.empty(info["shape"], dtype=dtype),
            )


TRIM_EVERY = 512 << 20  # bytes read between two trims: a trim costs ~50 ms, 10 s over a 7B model's 197 layers
_since_trim = [0]


def give_back_memory(freed: int = TRIM_EVERY) -> None:
    """Freed heap memory back to the system (glibc's malloc_trim; nothing elsewhere), once `freed` bytes (the
    weights just let go) add up to TRIM_EVERY since the last time."""
    _since_trim[0] += freed
    if _since_trim[0] < TRIM_EVERY:
        return
    _since_trim[0] = 0
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
