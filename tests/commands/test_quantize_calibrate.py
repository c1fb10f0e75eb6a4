"""`llmcli quantize --calibrate FILE`: the text's activations weight the code search (and change the codes),
and a file that cannot calibrate is refused by name before any weight is read; a weight with NaN is refused
by its tensor's name, by quantize and while loading."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.helpers import assert_clean_error, run_cli

TEXT = " ".join(f"line {i}: the quick brown fox jumps over the lazy dog number {i * 7 % 13}." for i in range(200))


@pytest.fixture
def no_weights_read(monkeypatch):
    """Fails the test if any shard is opened (the refusals come before)."""
    from llmcli.engine.quant import shard_reader

    def opened(*args, **kwargs):
        raise AssertionError("a weight was read")

    monkeypatch.setattr(shard_reader, "tensors", opened)


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "cannot read the calibration text"), (b"  \n", "is empty"), (b"\x00\x01\x02binary", "NUL bytes"),
     (b"\xff\xfe\xfa text", "not UTF-8"), (b"a short text", "shorter than one window of 512")],
)  # fmt: skip
def test_a_file_that_cannot_calibrate_is_refused_by_name(tiny_dir, tmp_path, capsys, monkeypatch, no_weights_read,
                                                         content, needle):  # fmt: skip
    text = tmp_path / "calibration.txt"
    if content is not None:
        text.write_bytes(content)
    out = tmp_path / "q"
    run = run_cli(["quantize", str(tiny_dir), str(out), "--to", "int4", "--calibrate", str(text)], capsys, monkeypatch)
    assert_clean_error(run, 1, str(text), needle)
    assert not out.exists()


def test_calibration_weights_the_search_and_the_file_records_it(tiny_dir, tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file

    text = tmp_path / "calibration.txt"
    text.write_text(TEXT)
    plain, calibrated = tmp_path / "plain", tmp_path / "calibrated"
    for out, extra in ((plain, []), (calibrated, ["--calibrate", str(text)])):
        run = run_cli(["quantize", str(tiny_dir), str(out), "--to", "int4", *extra], capsys, monkeypatch)
        assert run.code == 0, run.stderr

    def codes(out):
        return {k: v for shard in sorted(out.glob("*.safetensors")) for k, v in load_file(str(shard)).items()}

    a, b = codes(plain), codes(calibrated)
    name = "model.layers.0.mlp.down_proj.weight"
    assert a[name].dtype == torch.int8 and a[name].shape == b[name].shape
    assert not torch.equal(a[name], b[name])  # the importance moved some codes
    assert json.loads((calibrated / "config.json").read_text())["quantization_config"]["format"] == "naive-quantized"


@pytest.fixture
def nan_model(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "nan"
    shutil.copytree(tiny_dir, copy)
    index = json.loads((copy / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.self_attn.v_proj.weight"
    shard = copy / index[name]
    tensors = load_file(str(shard))
    tensors[name][3, 5] = float("nan")
    save_file(tensors, str(shard), metadata={"format": "pt"})
    return copy


def test_a_weight_with_nan_is_refused_by_name(nan_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "q"
    run = run_cli(["quantize", str(nan_model), str(out), "--to", "int4"], capsys, monkeypatch)
    assert_clean_error(run, 1, "model.layers.1.self_attn.v_proj.weight", "NaN or infinite")
    assert not out.exists() and not list(tmp_path.glob(".q*"))
    run = run_cli(["generate", "-m", str(nan_model), "hi", "-n", "2", "--quantize", "int8"], capsys, monkeypatch)
    assert_clean_error(run, 1, "model.layers.1.self_attn.v_proj.weight", "NaN or infinite")
