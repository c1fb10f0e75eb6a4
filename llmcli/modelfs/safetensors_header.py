"""A safetensors file's header, read without the safetensors package.

The package's `safe_open` needs a framework to open a file, and the lightest, numpy, costs 0.1-0.3 s of
import on paths that read no weight (inspect, diff, models): so the header is read here, as the format defines
it (an 8-byte little-endian length, then that many bytes of JSON: `__metadata__` and, per tensor, its dtype,
shape and byte offsets into the data that follows), and checked as the package checks it on open: a header
within the file and under 100 MB, a JSON object, known dtypes, each tensor's bytes equal to its shape times
its dtype's size, and the tensors tiling the data exactly. It also names a tensor the header lists twice
(the JSON parser would keep the last without a word). Loading the weights still goes through the package.
Pure Python; imports only llmcli.errors.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError

MAX_HEADER = 100_000_000  # safetensors' own limit on the header's length


class HeaderError(ValueError):
    """What is wrong with a header, in words for "is not a valid safetensors file: ..."."""


def read_header(path: Path, sizes: dict[str, float]) -> tuple[list[tuple[str, str, list[int]]], dict | None]:
    """[(name, dtype, shape)] in the header's order and the `__metadata__` (None if absent); `sizes` is bytes a
    value per dtype. Raises LlmcliError naming the file."""
    try:
        with open(path, "rb") as fh:
            total = fh.seek(0, 2)
            fh.seek(0)
            header, length = _parse(fh, total)
    except OSError as exc:
        raise LlmcliError(f"cannot read: {exc.strerror or exc}", path=path) from None
    except HeaderError as exc:
        raise LlmcliError(f"is not a valid safetensors file: {exc}", path=path) from None
    try:
        return _entries(header, sizes, data_bytes=total - 8 - length), _metadata(header)
    except HeaderError as exc:
        raise LlmcliError(f"is not a valid safetensors file: {exc}", path=path) from None


def _parse(fh: Any, total: int) -> tuple[dict[str, Any], int]:
    """The header's JSON object and its length in bytes."""
    head = fh.read(8)
    if len(head) < 8:
        raise HeaderError("the file is shorter than the 8 bytes of its header's length")
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER:
        raise HeaderError(f"header too large: {length:,} bytes, past the format's limit of {MAX_HEADER:,}")
    if 8 + length > total:
        raise HeaderError(f"its header length {length:,} runs past the end of the file ({total:,} bytes)")
    raw = fh.read(length)
    twice: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        twice.extend(k for k in keys if keys.count(k) > 1)
        return dict(items)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs)
    except (ValueError, RecursionError) as exc:
        raise HeaderError(f"its header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise HeaderError("its header is not a JSON object")
    if twice:
        raise HeaderError(f"its header names tensor {twice[0]!r} twice")
    return header, length


def _metadata(header: dict[str, Any]) -> dict | None:
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(v, str) for v in metadata.values())):  # fmt: skip
        raise HeaderError("its __metadata__ is not an object of strings")
    return metadata


def _entries(header: dict[str, Any], sizes: dict[str, float], *, data_bytes: int) -> list:
    entries, spans = [], []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, offsets = _fields(name, info, sizes)
        nbytes = math.prod(shape) * sizes[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise HeaderError(f"tensor {name!r} spans {offsets[1] - offsets[0]} bytes, not the {nbytes:g} its "
                              f"shape and dtype need")  # fmt: skip
        entries.append((name, dtype, shape))
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise HeaderError(
                f"invalid offset: tensor {name!r} starts at byte {begin}, not {end} (a gap or an overlap)"
            )
        end = stop
    if end != data_bytes:
        raise HeaderError(f"its tensors hold {end:,} bytes but the file has {data_bytes:,} after the header")
    return entries


def _fields(name: str, info: Any, sizes: dict[str, float]) -> tuple[str, list[int], list[int]]:
    if not isinstance(info, dict):
        raise HeaderError(f"tensor {name!r} is not described by an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in sizes:
        raise HeaderError(f"tensor {name!r} has dtype {dtype!r}, which safetensors does not define")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise HeaderError(f"tensor {name!r} has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):  # fmt: skip
        raise HeaderError(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end]")
    return dtype, shape, offsets
