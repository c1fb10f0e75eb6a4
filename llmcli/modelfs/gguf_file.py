"""GGUF metadata and tensor table through gguf-py, after a bounded sanity check of the header.

gguf-py trusts the counts in the header; a hostile file claiming 2^60 tensors would keep it busy, so
the counts are checked against the file size before the reader ever sees the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, squash

MAX_ARRAY_SHOWN = 8


@dataclass
class GgufTensor:
    name: str
    qtype: str
    shape: list[int]
    numel: int
    nbytes: int


@dataclass
class GgufInfo:
    version: int
    metadata: dict[str, Any]
    tensors: list[GgufTensor]
    truncation: str | None = None  # which tensor runs past the end of the file, and by how much


def _reader_class() -> Any:
    """gguf-py's reader, made to stop at the first tensor whose data runs past the end of the file (a partial
    download) and say so, where it would fail on numpy's reshape of the short array."""
    import gguf
    import numpy as np
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    class TruncationAwareReader(gguf.GGUFReader):
        truncation: str | None = None

        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            size = len(self.data)
            for number, field in enumerate(fields):
                _len, name, _dims, dims, raw_dtype, offset = field.parts
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(raw_dtype[0])]
                end = int(start_offs + offset[0]) + int(np.prod(dims)) * type_size // block
                if end > size:
                    self.truncation = (
                        f"truncated: tensor {bytes(name).decode(errors='replace')} ({number + 1} of {len(fields)}) "
                        f"runs {end - size:,} bytes past the end of the file ({size:,} bytes); "
                        f"{len(fields) - number} tensors are incomplete"
                    )
                    fields = fields[:number]
                    break
            super()._build_tensors(start_offs, fields)

    return TruncationAwareReader


def check_header(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError as exc:
        raise LlmcliError(f"cannot read: {exc.strerror or exc}", path=path) from None
    if len(head) < 24 or head[:4] != b"GGUF":
        raise LlmcliError("is not a GGUF file (bad magic or truncated header)", path=path)
    version, tensor_count, kv_count = struct.unpack("<IQQ", head[4:24])
    if version not in (1, 2, 3):
        raise LlmcliError(f"has unsupported GGUF version {version}", path=path)
    # Each metadata entry takes at least 12 bytes and each tensor entry at least 24.
    if kv_count * 12 > size or tensor_count * 24 > size:
        raise LlmcliError(
            f"claims {kv_count:,} metadata entries and {tensor_count:,} tensors, impossible in {size:,} bytes",
            path=path,
        )


def _value(field: Any) -> Any:
    value = field.contents()
    if isinstance(value, list) and len(value) > MAX_ARRAY_SHOWN:
        return {"array_length": len(value), "first": value[:MAX_ARRAY_SHOWN]}
    return value


def read_gguf(path: Path) -> GgufInfo:
    check_header(path)
    try:
        reader = _reader_class()(str(path))
        metadata: dict[str, Any] = {}
        for key, field in reader.fields.items():
            if key.startswith("GGUF."):
                continue
            metadata[key] = _value(field)
        tensors = [
            GgufTensor(t.name, t.tensor_type.name, [int(d) for d in t.shape], int(t.n_elements), int(t.n_bytes))
            for t in reader.tensors
        ]
        version = int(reader.fields["GGUF.version"].contents()) if "GGUF.version" in reader.fields else 0
    except LlmcliError:
        raise
    except (MemoryError, RecursionError):
        raise LlmcliError("GGUF file is malformed (sizes it claims are impossible)", path=path) from None
    except Exception as exc:  # noqa: BLE001 - gguf-py raises bare ValueError/IndexError/KeyError on bad files
        detail = squash(exc, 200) or type(exc).__name__
        raise LlmcliError(f"GGUF file is malformed: {detail}", path=path) from None
    return GgufInfo(version, metadata, tensors, reader.truncation)


def check_complete(path: Path) -> None:
    """Refuses a GGUF file whose tensors run past its end, before anything tries to load them."""
    truncation = read_gguf(path).truncation
    if truncation is not None:
        raise LlmcliError(f"{truncation} (an incomplete download?)", path=path)
