"""Property-based tests: whatever bytes or values a model file holds, only llmcli's own error escapes."""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcli.errors import LlmcliError
from llmcli.modelfs.checkpoint import DTYPE_BYTES, read_checkpoint, read_shard
from llmcli.modelfs.config import geometry
from llmcli.reports.inspect import build

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


SCRATCH = Path(tempfile.mkdtemp(prefix="llmcli-prop-"))


def _scratch() -> Path:
    """One reused folder, emptied for each example (hypothesis runs examples one at a time)."""
    for child in SCRATCH.iterdir():
        child.unlink()
    return SCRATCH


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_a_shard(data):
    path = _scratch() / "model.safetensors"
    path.write_bytes(data)
    try:
        read_shard(path)
    except LlmcliError as exc:
        assert "model.safetensors" in exc.one_line() and "\n" not in exc.one_line()


@FAST
@given(
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    st.binary(max_size=64),
    st.integers(0, 2**64 - 1) | st.none(),
)
def test_header_like_bytes_as_a_shard(header, tail, length):
    raw = json.dumps(header).encode()
    path = _scratch() / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + tail)
    try:
        read_shard(path)
    except LlmcliError as exc:  # only llmcli's own one-line error, naming the file, may escape
        assert "model.safetensors" in exc.one_line() and "\n" not in exc.one_line()


tensor_specs = st.dictionaries(
    st.text(alphabet="abcdefghij._", min_size=1, max_size=12),
    st.tuples(
        st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "I64", "BOOL"]), st.lists(st.integers(0, 6), max_size=3)
    ),
    min_size=1,
    max_size=8,
)


@FAST
@given(tensor_specs)
def test_valid_headers_count_the_sum_of_shape_products(specs):
    header, offset = {}, 0
    for name, (dtype, shape) in specs.items():
        nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    directory = _scratch()
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    ckpt = read_checkpoint(directory)
    assert ckpt.parameters == sum(math.prod(shape) for _, shape in specs.values())
    assert ckpt.tensor_bytes == offset
    assert set(ckpt.tensors) == set(specs)
    assert ckpt.checks == []


SIZE_KEYS = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "head_dim",
    "max_position_embeddings",
    "rope_theta",
    "tie_word_embeddings",
    "torch_dtype",
    "text_config",
    "rope_parameters",
]


@FAST
@given(st.dictionaries(st.sampled_from(SIZE_KEYS), json_values, max_size=8))
def test_config_values_never_crash_geometry(values):
    geometry({"model_type": "llama", **values})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(SIZE_KEYS), json_values, max_size=6))
def test_config_values_in_torch_free_inspect(values):
    directory = _scratch()
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", **values}))
    try:
        build(directory, sections=["config", "generation", "tokenizer", "checkpoint", "memory"], device="cpu")
    except LlmcliError as exc:
        assert "config.json" in exc.one_line()
