"""`llmcli diff`: config keys, tensors only on one side, changed dtypes/shapes, totals; no weights loaded."""

from __future__ import annotations

import json

from tests.helpers import assert_clean_error, run_cli


def diff_json(a, b, capsys, monkeypatch):
    run = run_cli(["diff", str(a), str(b), "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    return run.json()


def test_identical(tiny_dir, capsys, monkeypatch):
    data = diff_json(tiny_dir, tiny_dir, capsys, monkeypatch)
    assert data["identical"] is True and data["config"] == [] and data["tensors_changed"] == []
    assert data["tensors_same"] == data["a"]["tensors"]


def test_tied_vs_untied(tiny_dir, tiny_untied_single, capsys, monkeypatch):
    data = diff_json(tiny_dir, tiny_untied_single, capsys, monkeypatch)
    assert data["identical"] is False
    keys = {c["key"]: c for c in data["config"]}
    assert keys["tie_word_embeddings"]["a"] is True and keys["tie_word_embeddings"]["b"] is False
    assert data["tensors_only_in_b"] == ["lm_head.weight"] and data["tensors_only_in_a"] == []
    vocab = json.loads((tiny_dir / "config.json").read_text())["vocab_size"]
    assert data["b"]["parameters"] - data["a"]["parameters"] == vocab * 64  # the untied lm_head


def test_changed_dtype_and_shape(tiny_untied_single, tmp_path, capsys, monkeypatch):
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    other = tmp_path / "other"
    shutil.copytree(tiny_untied_single, other)
    tensors = load_file(str(other / "model.safetensors"))
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.float16)
    tensors["lm_head.weight"] = tensors["lm_head.weight"][:10]
    tensors["extra.bias"] = np.zeros(3, dtype=np.float32)
    save_file(tensors, str(other / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((other / "config.json").read_text())
    cfg["rope_parameters"]["rope_theta"] = 1234.0
    cfg["new_key"] = 1
    (other / "config.json").write_text(json.dumps(cfg))
    data = diff_json(tiny_untied_single, other, capsys, monkeypatch)
    changed = {c["name"]: c for c in data["tensors_changed"]}
    assert changed["model.norm.weight"]["b"]["dtype"] == "F16"
    assert changed["lm_head.weight"]["b"]["shape"][0] == 10
    assert data["tensors_only_in_b"] == ["extra.bias"]
    keys = {c["key"]: c for c in data["config"]}
    assert keys["rope_parameters.rope_theta"]["b"] == 1234.0
    assert keys["new_key"]["only_in"] == "b"
    plain = run_cli(["diff", str(tiny_untied_single), str(other)], capsys, monkeypatch)
    assert "rope_parameters.rope_theta" in plain.stdout and "only in B: extra.bias" in plain.stdout
    assert "different" in plain.stdout


def test_gguf_against_itself(capsys, monkeypatch):
    from llmcli.modelfs.default_model import default_gguf

    data = diff_json(default_gguf(), default_gguf(), capsys, monkeypatch)
    assert data["identical"] is True and data["a"]["parameters"] == 134_515_008


def test_bad_sides(tiny_dir, tmp_path, capsys, monkeypatch):
    assert_clean_error(run_cli(["diff", str(tiny_dir), str(tmp_path / "nope")], capsys, monkeypatch), 1, "nope")
