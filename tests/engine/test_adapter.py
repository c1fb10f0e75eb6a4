"""LoRA adapters: inspect reads rank, alpha, targets and the parameter fraction; generate applies them via peft."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import assert_clean_error, run_cli

PROMPT = "What is the capital of France?"


def test_inspect_adapter(tiny_adapter, tiny_dir, capsys, monkeypatch):
    run = run_cli(["inspect", str(tiny_adapter), "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    cfg = json.loads((tiny_dir / "config.json").read_text())
    hidden, heads, kv, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], 2
    head_dim = hidden // heads
    q = 4 * (hidden + hidden)
    v = 4 * (hidden + kv * head_dim)
    assert data["adapter"]["r"] == 4 and data["adapter"]["lora_alpha"] == 8 and data["adapter"]["scaling"] == 2.0
    assert sorted(data["adapter"]["target_modules"]) == ["q_proj", "v_proj"]
    assert data["parameters"]["adapter"] == layers * (q + v)
    assert data["parameters"]["by_module"] == {"q_proj": layers * q, "v_proj": layers * v}
    base_total = inspect_total(tiny_dir, capsys, monkeypatch)
    assert data["parameters"]["base"] == base_total
    assert data["parameters"]["fraction_of_base"] == pytest.approx(layers * (q + v) / base_total)
    assert data["fits_base"] is True and data["checks"] == []
    plain = run_cli(["inspect", str(tiny_adapter)], capsys, monkeypatch)
    assert "scaling" in plain.stdout and "of the base's" in plain.stdout


def inspect_total(path, capsys, monkeypatch):
    return run_cli(["inspect", str(path), "--only", "checkpoint", "--json"], capsys, monkeypatch).json()["checkpoint"][
        "parameters"
    ]


def test_adapter_that_does_not_fit(tiny_adapter, tmp_path, capsys, monkeypatch):
    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(tiny_adapter, bad)
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    name = next(k for k in tensors if "q_proj.lora_A" in k)
    tensors[name.replace("q_proj", "z_proj")] = tensors.pop(name)
    save_file(tensors, str(bad / "adapter_model.safetensors"))
    data = run_cli(["inspect", str(bad), "--json"], capsys, monkeypatch).json()
    assert data["fits_base"] is False
    assert any("z_proj.weight" in c for c in data["checks"])


def test_generate_with_adapter_equals_peft(tiny_adapter, tiny_dir, capsys, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    args = ["generate", "-m", str(tiny_dir), "--dtype", "float32", PROMPT, "--greedy", "-n", "8", "--json"]
    run = run_cli([*args, "--adapter", str(tiny_adapter)], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["model"]["adapter"] == {"path": str(tiny_adapter), "merged": False}
    base = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(tiny_adapter)).eval()
    ids = torch.tensor([data["prompt_token_ids"]])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **data["generate_kwargs"])
    expected = out[0, ids.shape[1] :].tolist()
    got = data["outputs"][0]["token_ids"]
    assert got == expected[: len(got)]
    merged = run_cli([*args, "--adapter", str(tiny_adapter), "--merge"], capsys, monkeypatch).json()
    assert merged["model"]["adapter"]["merged"] is True
    assert merged["outputs"][0]["token_ids"] == got


def test_adapter_usage_errors(tiny_dir, capsys, monkeypatch):
    assert_clean_error(
        run_cli(["generate", "-m", str(tiny_dir), "hi", "--merge"], capsys, monkeypatch),
        2,
        "--merge goes with --adapter",
    )
    assert_clean_error(
        run_cli(["generate", "-m", str(tiny_dir), "hi", "--adapter", str(tiny_dir)], capsys, monkeypatch),
        2,
        "not a PEFT adapter",
    )


def test_an_unmerged_adapter_keeps_its_base_weights_when_prepacked(tiny_adapter, tiny_dir):
    """peft's layers read their base layer's weight: under an unmerged adapter, prepacking releases nothing;
    merged, the model is plain again and its weights are released once reordered."""
    import torch

    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Dtype, LoadSpec

    def linears(adapter_merged):
        spec = LoadSpec(dtype=Dtype.float32, prepack=True, adapter=tiny_adapter, merge=adapter_merged)
        loaded = load(resolve_model(str(tiny_dir)), spec)
        assert loaded.prepacked
        return [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]

    assert not any(m.weight.is_meta for m in linears(False))
    assert any(m.weight.is_meta for m in linears(True))
