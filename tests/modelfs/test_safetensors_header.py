"""modelfs.safetensors_header against the safetensors library itself: on headers with gaps, overlaps, wrong
sizes, unknown dtypes, odd metadata, trailing spaces and wrong file lengths, each accepts exactly what the other
accepts (llmcli reads headers itself only to avoid the library's numpy import)."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest

from llmcli.errors import LlmcliError
from llmcli.modelfs.checkpoint import DTYPE_BYTES, read_shard


def _header(rng: random.Random) -> tuple[dict, int]:
    header, end = {}, 0
    for i in range(rng.randint(0, 4)):
        dtype = rng.choice(["F32", "F16", "BF16", "I8", "U8", "I64", "BOOL", "F8_E4M3", "XX"])
        shape = [rng.randint(0, 4) for _ in range(rng.randint(0, 3))]
        begin, stop = end, end + int(math.prod(shape) * DTYPE_BYTES.get(dtype, 1))
        damage = rng.random()
        if damage < 0.05:
            stop += 1  # a size that is not the shape's
        elif damage < 0.1:
            begin, stop = begin + 1, stop + 1  # a gap
        elif damage < 0.13:
            begin = max(0, begin - 1)  # an overlap
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, stop]}
        end = stop
    if rng.random() < 0.2:
        header["__metadata__"] = {"format": "pt"} if rng.random() < 0.7 else {"n": 1}
    return header, end


@pytest.mark.parametrize("seed", range(6))
def test_it_accepts_what_the_library_accepts(tmp_path, seed):
    from safetensors import safe_open

    rng = random.Random(seed)
    path = tmp_path / "model.safetensors"
    for _ in range(60):
        header, end = _header(rng)
        raw = json.dumps(header).encode() + b" " * rng.choice([0, 0, 3])
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * max(0, end + rng.choice([0, 0, 0, 1, -1])))
        try:
            with safe_open(str(path), "np") as fh:
                theirs = sorted((name, fh.get_slice(name).get_dtype(), fh.get_slice(name).get_shape())
                                for name in fh.keys())  # fmt: skip
        except Exception:  # noqa: BLE001 - the library's errors have no common type
            theirs = None
        try:
            ours = sorted((t.name, t.dtype, t.shape) for t in read_shard(path)[0])
        except LlmcliError as exc:
            assert "model.safetensors" in exc.one_line()
            ours = None
        assert ours == theirs, header
