"""Fixtures shared across the suite: tiny models built once, the sparse 7B, the default model converted once."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import QWEN7B_CONFIG_DIR, build_tiny_model, build_tokenizer


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    """No test sees the user's model choice; the cache lives in the session's folder."""
    monkeypatch.delenv("LLMCLI_MODEL", raising=False)
    monkeypatch.delenv("LLMCLI_OUTPUT", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LLMCLI_HOME", str(session_home(tmp_path_factory)))
    # The CPU dtype by the flags, as on every CI machine alike; tests/engine/test_dtype_probe.py turns it on.
    monkeypatch.setenv("LLMCLI_DTYPE_PROBE", "0")


def session_home(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp() / "llmcli-home"
    base.mkdir(exist_ok=True)
    return base


@pytest.fixture(scope="session")
def step_home(tmp_path_factory) -> Path:
    """A home of the compiled steps' tests' own (engine.step): a library built there must not change how the rest
    of the suite decodes; the tests share it, so that each kind of library is built once (test_compiled_step
    keeps one of its own: it asserts that its first build is one)."""
    return tmp_path_factory.mktemp("step-home")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A tiny Qwen2 with `layer_types`: generate() hands its decoding calls a dict of masks."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("tiny-qwen2")
    tok = build_tokenizer(path)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         layer_types=["full_attention"] * 2, tie_word_embeddings=False,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(3)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Tiny tied Llama, saved in several shards with an index."""
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_model(path, tied=True, shard="120KB")
    return path


@pytest.fixture(scope="session")
def tiny_untied_single(tmp_path_factory) -> Path:
    """Tiny untied Llama in a single model.safetensors."""
    path = tmp_path_factory.mktemp("tiny-untied")
    build_tiny_model(path, tied=False, shard=None, seed=1)
    return path


@pytest.fixture
def tiny_copy(tiny_dir, tmp_path) -> Path:
    """A private copy of the tiny model that a test may damage."""
    dst = tmp_path / "model"
    shutil.copytree(tiny_dir, dst)
    return dst


@pytest.fixture(scope="session")
def qwen_config_dir() -> Path:
    return QWEN7B_CONFIG_DIR


QWEN7B_SHARD_BYTES = 4_000_000_000


@pytest.fixture(scope="session")
def sparse_qwen7b(tmp_path_factory) -> Path:
    """Qwen2.5-7B shaped checkpoint: real safetensors headers, data left as sparse holes (no disk cost)."""
    import torch
    import transformers

    path = tmp_path_factory.mktemp("qwen7b-sparse")
    shutil.copy(QWEN7B_CONFIG_DIR / "config.json", path / "config.json")
    config = transformers.AutoConfig.from_pretrained(str(path))
    with torch.device("meta"):
        model = transformers.Qwen2ForCausalLM(config)
    shards: list[list[tuple[str, list[int]]]] = [[]]
    size = 0
    for name, tensor in model.state_dict().items():
        nbytes = tensor.numel() * 2
        if size + nbytes > QWEN7B_SHARD_BYTES and shards[-1]:
            shards.append([])
            size = 0
        shards[-1].append((name, list(tensor.shape)))
        size += nbytes
    count = len(shards)
    weight_map = {}
    total = 0
    for i, entries in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{count:05d}.safetensors"
        header = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in entries:
            nbytes = 2
            for d in shape:
                nbytes *= d
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = file
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(path / file, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
            fh.truncate(8 + len(raw) + offset)
        total += offset
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    return path


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory) -> Path:
    """The embedded default model, converted once per test run by two racing processes (lock test included)."""
    home = session_home(tmp_path_factory)
    code = (
        "from llmcli.modelfs.default_model import default_gguf, ensure_converted; "
        "print(ensure_converted(default_gguf()))"
    )
    env = dict(os.environ, LLMCLI_HOME=str(home), HF_HUB_OFFLINE="1")
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err.decode()
    paths = {out.decode().strip() for out, _ in outs}
    assert len(paths) == 1, paths
    return Path(paths.pop())


@pytest.fixture(scope="session")
def direct(tiny_dir):
    """The tiny model and its tokenizer loaded directly with transformers (float32), for reference outputs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32).eval()
    return model, tok


@pytest.fixture(scope="session")
def tiny_adapter(tiny_dir, tmp_path_factory):
    """A LoRA adapter (q_proj, v_proj) on the tiny model, with weights that change its outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero (a no-op adapter); give it weight so it changes outputs
                param.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(str(path))
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tiny_dir)
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="session")
def perturbed_default(default_model_dir, tmp_path_factory):
    """The default model with every weight nudged by Gaussian noise (1% of its tensor's spread), in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("perturbed")
    model = AutoModelForCausalLM.from_pretrained(str(default_model_dir), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator) * float(param.std()) * 0.01
            param.add_(noise)
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(str(default_model_dir)).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def models(tiny_dir, tiny_untied_single):
    """dpo's and kto's two sides in float32: the untied model as the policy, the tied one as the reference, and
    their shared tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    load = lambda p: AutoModelForCausalLM.from_pretrained(str(p), dtype=torch.float32).eval()  # noqa: E731
    return load(tiny_untied_single), load(tiny_dir), AutoTokenizer.from_pretrained(str(tiny_dir))
