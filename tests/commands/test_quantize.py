"""`llmcli quantize`: a directory that transformers and llmcli load as it is, inspect describes without torch,
written atomically; and a truncated GGUF named as such by inspect and refused by generate."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.helpers import assert_clean_error, run_cli, run_subprocess


def _saved(tiny_dir, tmp_path_factory, scheme):
    out = tmp_path_factory.mktemp("saved") / scheme
    run = run_subprocess(["quantize", str(tiny_dir), str(out), "--to", scheme, "--json"])
    assert run.code == 0, run.stderr
    return out, run


@pytest.fixture(scope="module")
def saved_int4(tiny_dir, tmp_path_factory):
    return _saved(tiny_dir, tmp_path_factory, "int4")


@pytest.fixture(scope="module")
def saved_int8(tiny_dir, tmp_path_factory):
    return _saved(tiny_dir, tmp_path_factory, "int8")


@pytest.fixture(scope="module")
def saved_untied(tiny_untied_single, tmp_path_factory):
    """int4 with an untied output layer, which goes in int8 (a config group of its own)."""
    return _saved(tiny_untied_single, tmp_path_factory, "int4")


def test_quantize_writes_a_compressed_tensors_directory(saved_int4, tiny_dir):
    out, run = saved_int4
    record = run.json()
    assert record["path"] == str(out) and record["scheme"] == "int4" and record["group_size"] == 32
    assert record["quantized_layers"] == 14 and record["output_layer"] is None
    assert record["kept"] == {"lm_head": "the output layer, tied to the embeddings"}
    assert "int4, group 32: 14 linear layers" in run.stderr
    config = json.loads((out / "config.json").read_text())
    quant = config["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors" and quant["format"] == "naive-quantized"
    assert quant["config_groups"]["group_0"]["weights"]["group_size"] == 32 and quant["ignore"] == ["lm_head"]
    assert (out / "tokenizer.json").is_file() and not list(out.parent.glob(".*partial*"))


def test_llmcli_loads_the_saved_codes_without_quantizing_again(saved_int4, tiny_dir, capsys):
    from safetensors import safe_open

    from llmcli.engine.load.loader import load
    from llmcli.engine.quant import saved
    from llmcli.engine.quant.layers import Int4Linear
    from llmcli.engine.quant.schemes import SCHEMES
    from llmcli.modelfs.source import ModelSource
    from llmcli.plan import LoadSpec

    out, _ = saved_int4
    loaded = load(ModelSource(out, str(out)), LoadSpec(dtype="float32"))
    layer = loaded.model.model.layers[1].mlp.down_proj
    assert isinstance(layer, Int4Linear) and loaded.quantization["scheme"] == "int4"
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.mlp.down_proj"
    parts = {}
    for part in saved.NAIVE:
        with safe_open(str(out / weight_map[f"{name}.{part}"]), "pt") as f:
            parts[part] = f.get_tensor(f"{name}.{part}")
    codes = saved.read(parts, SCHEMES["int4"])
    x = torch.randn(3, layer.in_features)
    expected = x.bfloat16().float() @ codes.dequantize().t()
    assert torch.allclose(layer(x), expected, atol=0.02 * expected.abs().max().item())


@pytest.mark.parametrize("saved", ["saved_int4", "saved_int8", "saved_untied"])
def test_the_saved_model_is_the_model_quantize_computes(saved, request):
    """Saved = loaded: every layer's codes, scales and zeros as `--quantize` makes them, so the same tokens."""
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import ModelSource
    from llmcli.plan import LoadSpec, Quantize

    out, run = request.getfixturevalue(saved)
    scheme = run.json()["scheme"]
    assert run.json()["group_size"] == 32
    group = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]
    wanted = {"num_bits": int(scheme[3:]), "strategy": "group", "group_size": 32, "symmetric": False}
    assert {k: group["weights"][k] for k in wanted} == wanted
    source = request.getfixturevalue("tiny_untied_single" if saved == "saved_untied" else "tiny_dir")
    from_file = load(ModelSource(out, str(out)), LoadSpec(dtype="float32"))
    here = load(ModelSource(source, str(source)), LoadSpec(dtype="float32", quantize=Quantize(scheme)))
    assert from_file.describe()["quantization"]["output_layer"] == here.describe()["quantization"]["output_layer"]
    assert from_file.describe()["quantization"]["group_size"] == 32
    held = dict(from_file.model.named_buffers())
    for name, buffer in here.model.named_buffers():
        if name.endswith(("packed", "scales_and_zeros")):
            assert torch.equal(buffer, held[name]), name
    ids = here.tokenizer("hello world, this is a test", return_tensors="pt").input_ids
    a = here.model.generate(ids, max_new_tokens=12, do_sample=False)
    b = from_file.model.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("saved", ["saved_int4", "saved_int8", "saved_untied"])
def test_transformers_loads_the_directory_with_compressed_tensors(saved, request):
    """transformers' own loader (compressed-tensors decompressing) gives the weights llmcli reads."""
    pytest.importorskip("compressed_tensors")
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import ModelSource
    from llmcli.plan import LoadSpec

    out, _ = request.getfixturevalue(saved)
    theirs = AutoModelForCausalLM.from_pretrained(
        str(out), dtype=torch.float32, quantization_config=CompressedTensorsConfig(run_compressed=False)
    )
    ours = load(ModelSource(out, str(out)), LoadSpec(dtype="float32"))
    ids = ours.tokenizer("hello world, this is a test", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = theirs(ids).logits, ours.model(ids).logits
    assert torch.allclose(a, b, atol=0.03 * a.abs().max().item())
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


def test_inspect_describes_the_saved_scheme_without_torch(saved_int4):
    out, _ = saved_int4
    code = (
        "import json, sys; from llmcli.reports.inspect import build\n"
        f"data = build(__import__('pathlib').Path({str(out)!r}), sections=['config', 'checkpoint']).data\n"
        "print(json.dumps({'q': data['quantization'], 'torch': 'torch' in sys.modules}))"
    )
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["torch"] is False
    q = got["q"]
    assert q["scheme"] == "int4" and q["bits"] == 4 and q["group_size"] == 32 and q["quantized_layers"] == 14
    assert q["format"] == "naive-quantized" and q["kept_in_float"] == ["lm_head"] and q["own_scheme"] == {}
    assert q["bytes_per_param"] == 1.25  # a byte a code, a float32 scale and zero a group of 32


def test_an_existing_out_is_refused(tiny_dir, tmp_path, capsys, monkeypatch):
    run = run_cli(["quantize", str(tiny_dir), str(tmp_path), "--to", "int8"], capsys, monkeypatch)
    assert_clean_error(run, 1, str(tmp_path), "already exists")


def test_a_failed_write_leaves_nothing_behind(tiny_dir, tmp_path, capsys, monkeypatch):
    """A full disk halfway through: one line naming OUT, no OUT, no partial directory."""
    import errno

    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "q"
    run = run_cli(["quantize", str(tiny_dir), str(out), "--to", "int4"], capsys, monkeypatch)
    assert_clean_error(run, 1, str(out), "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_saved_model_refuses_another_scheme(saved_int4, capsys, monkeypatch):
    out, _ = saved_int4
    run = run_cli(["score", "--model", str(out), "--quantize", "int8", "hello"], capsys, monkeypatch)
    assert_clean_error(run, 2, "saved in int4", "drop --quantize")


def test_a_truncated_gguf_is_named_by_inspect_and_refused_by_generate(tmp_path, capsys, monkeypatch):
    from llmcli.modelfs.default_model import default_gguf

    cut = tmp_path / "cut.gguf"
    with open(default_gguf(), "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(40_000_000))
    run = run_cli(["inspect", str(cut), "--json"], capsys, monkeypatch)
    data = run.json()
    assert data["architecture"] == "llama" and data["metadata"]["llama.block_count"] == 30
    assert any("truncated: tensor" in c and "bytes past the end of the file (40,000,000 bytes)" in c
               for c in data["checks"])  # fmt: skip
    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path / "home"))
    run = run_cli(["generate", "--model", str(cut), "hi"], capsys, monkeypatch)
    assert_clean_error(run, 1, str(cut), "truncated: tensor", "past the end of the file")
    assert not (tmp_path / "home" / "models").exists() or not any((tmp_path / "home" / "models").iterdir())
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


def test_inspect_names_an_output_layer_saved_in_int8(saved_untied, capsys, monkeypatch):
    from tests.helpers import run_cli

    out, _ = saved_untied
    run = run_cli(["inspect", str(out), "--only", "checkpoint", "--json"], capsys, monkeypatch)
    quant = run.json()["quantization"]
    assert quant["own_scheme"] == {"lm_head": "int8"} and quant["kept_in_float"] == []
    assert quant["quantized_layers"] == 15  # fourteen int4 layers and the head
