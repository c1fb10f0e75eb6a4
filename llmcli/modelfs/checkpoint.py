"""Safetensors shards and their index, from the headers alone (modelfs.safetensors_header: no tensor data is
read, so this works on checkpoints far larger than RAM, and it imports neither torch nor numpy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.modelfs.files import read_head, read_json_object, safe_child, sniff

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin", "consolidated.pth")

DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "C64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}
# Display names that match what torch and transformers call them.
DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "F4": "float4",
}


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int]
    shard: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.numel * DTYPE_BYTES.get(self.dtype, 0))


@dataclass
class ShardInfo:
    file: str
    size_on_disk: int
    tensors: int
    parameters: int
    tensor_bytes: int
    dtypes: dict[str, int]


@dataclass
class Checkpoint:
    kind: str  # "safetensors", "pickle" or "none"
    shards: list[ShardInfo] = field(default_factory=list)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    index_total_size: int | None = None
    checks: list[str] = field(default_factory=list)
    pickle_files: list[str] = field(default_factory=list)

    @property
    def tensor_bytes(self) -> int:
        return sum(s.tensor_bytes for s in self.shards)

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    def by_dtype(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            name = DTYPE_NAMES.get(t.dtype, t.dtype)
            counts[name] = counts.get(name, 0) + t.numel
        return counts


def read_shard(path: Path) -> tuple[list[TensorInfo], dict[str, str] | None]:
    """All tensor headers of one safetensors file, or an error saying what the file really is."""
    from llmcli.modelfs.safetensors_header import read_header

    kind = sniff(read_head(path))
    if kind is not None:
        raise LlmcliError(f"is {kind}, not a safetensors file", path=path)
    entries, metadata = read_header(path, DTYPE_BYTES)
    return [TensorInfo(name, dtype, shape, path.name) for name, dtype, shape in sorted(entries)], metadata


def _weight_map(index: dict[str, Any], index_path: Path) -> dict[str, str]:
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise LlmcliError("weight_map is missing or not an object", path=index_path)
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise LlmcliError(f"weight_map[{name!r}] is not a file name", path=index_path)
    return weight_map


def read_checkpoint(model_dir: Path) -> Checkpoint:
    index_path = model_dir / INDEX_NAME
    on_disk = sorted(p.name for p in model_dir.glob("*.safetensors") if p.is_file() or p.is_symlink())
    pickles = [n for n in PICKLE_NAMES if (model_dir / n).exists()]
    pickles += sorted(p.name for p in model_dir.glob("pytorch_model-*.bin"))

    ckpt = Checkpoint(kind="none", pickle_files=pickles)
    weight_map: dict[str, str] | None = None
    if index_path.is_file():
        index = read_json_object(index_path, max_bytes=64 * 1024 * 1024, what="safetensors index")
        weight_map = _weight_map(index, index_path)
        meta = index.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("total_size"), int):
            ckpt.index_total_size = meta["total_size"]
        shard_names = list(dict.fromkeys(weight_map.values()))
        for name in shard_names:
            safe_child(model_dir, name, index_path)
        missing = [n for n in shard_names if not (model_dir / n).is_file()]
        if missing:
            raise LlmcliError(
                f"names {len(missing)} shard file(s) that do not exist: {', '.join(missing[:3])}"
                + (" …" if len(missing) > 3 else ""),
                path=index_path,
            )
        stray = [n for n in on_disk if n not in set(shard_names)]
        if stray:
            ckpt.checks.append(f"safetensors files not in the index (ignored by loaders): {', '.join(stray)}")
    elif on_disk:
        shard_names = [SINGLE_NAME] if SINGLE_NAME in on_disk else on_disk
        if SINGLE_NAME in on_disk and len(on_disk) > 1:
            others = ", ".join(n for n in on_disk if n != SINGLE_NAME)
            ckpt.checks.append(f"safetensors files besides model.safetensors (ignored by loaders): {others}")
    else:
        if pickles:
            ckpt.kind = "pickle"
            ckpt.checks.append(
                f"only pickle weights ({', '.join(pickles)}): not read, since unpickling can run code; "
                "convert them to safetensors"
            )
        return ckpt

    ckpt.kind = "safetensors"
    for name in shard_names:
        path = safe_child(model_dir, name, index_path if weight_map is not None else model_dir)
        tensors, _ = read_shard(path)
        dtypes: dict[str, int] = {}
        for t in tensors:
            dtypes[DTYPE_NAMES.get(t.dtype, t.dtype)] = dtypes.get(DTYPE_NAMES.get(t.dtype, t.dtype), 0) + 1
            if t.name in ckpt.tensors:
                ckpt.checks.append(f"tensor {t.name} is stored twice ({ckpt.tensors[t.name].shard} and {name})")
            ckpt.tensors[t.name] = t
        ckpt.shards.append(
            ShardInfo(
                file=name,
                size_on_disk=path.stat().st_size,
                tensors=len(tensors),
                parameters=sum(t.numel for t in tensors),
                tensor_bytes=sum(t.nbytes for t in tensors),
                dtypes=dtypes,
            )
        )
        if weight_map is not None:
            listed = {k for k, v in weight_map.items() if v == name}
            held = {t.name for t in tensors}
            lacking = sorted(listed - held)
            extra = sorted(held - listed)
            if lacking:
                ckpt.checks.append(
                    f"index names {len(lacking)} tensor(s) that {name} does not hold: {', '.join(lacking[:3])}"
                    + (" …" if len(lacking) > 3 else "")
                )
            if extra:
                ckpt.checks.append(
                    f"{name} holds {len(extra)} tensor(s) the index does not name: {', '.join(extra[:3])}"
                    + (" …" if len(extra) > 3 else "")
                )
    if ckpt.index_total_size is not None and ckpt.index_total_size != ckpt.tensor_bytes:
        ckpt.checks.append(
            f"index total_size {ckpt.index_total_size:,} differs from the shards' tensor bytes {ckpt.tensor_bytes:,}"
        )
    return ckpt
