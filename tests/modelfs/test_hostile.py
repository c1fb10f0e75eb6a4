"""A corpus of broken and hostile model directories, built here, fed to inspect and generate.

Each case must end in one line on stderr that names the file, exit 1 (2 for usage), no traceback, bounded
time, nothing written into the model directory, and no code from the directory executed.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, assert_clean_error, cli_env, run_cli

SENTINEL_NAME = "PWNED"


def st_bytes(header: dict | None, data: bytes = b"", raw: bytes | None = None, length: int | None = None) -> bytes:
    head = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(head) if length is None else length) + head + data


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


class Payload:
    """Unpickling this creates the sentinel file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_shard(model: Path, content: bytes) -> None:
    for shard in model.glob("*.safetensors"):
        shard.unlink()
    (model / "model.safetensors.index.json").unlink(missing_ok=True)
    (model / "model.safetensors").write_bytes(content)


def gguf_header(version=3, tensors=0, kvs=0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


# name -> (function that damages a copy of the tiny model, text the error must contain)
CORPUS = {
    "config-not-json": (lambda d: (d / "config.json").write_text("{'single': 'quotes'}"), "not valid JSON"),
    "config-array": (lambda d: (d / "config.json").write_text("[]"), "must be a JSON object"),
    "config-not-utf8": (lambda d: (d / "config.json").write_bytes(b'{"model_type": "\xc3\x28"}'), "not UTF-8"),
    "config-html": (lambda d: (d / "config.json").write_text("<html><body>502 Bad Gateway</body></html>"), "HTML"),
    "config-deep": (lambda d: (d / "config.json").write_text("[" * 200_000 + "]" * 200_000), "nested too deeply"),
    "config-nan-size": (lambda d: _patch_config(d, hidden_size=float("nan")), "hidden_size"),
    "config-negative": (lambda d: _patch_config(d, num_hidden_layers=-3), "num_hidden_layers"),
    "config-string-size": (lambda d: _patch_config(d, num_attention_heads="32"), "num_attention_heads"),
    "config-huge": (lambda d: _patch_config(d, num_hidden_layers=10**12), "num_hidden_layers"),
    "config-lfs": (
        lambda d: (d / "config.json").write_text("version https://git-lfs.github.com/spec/v1\n"),
        "git lfs pull",
    ),
    "shard-lfs": (
        lambda d: write_shard(d, b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n"),
        "git lfs pull",
    ),
    "shard-zip": (lambda d: write_shard(d, b"PK\x03\x04" + b"\0" * 100), "zip archive"),
    "shard-pickle": (lambda d: write_shard(d, pickle.dumps({"a": 1}, protocol=4)), "pickle"),
    "shard-gguf": (lambda d: write_shard(d, gguf_header() + b"\0" * 64), "a GGUF file"),
    "shard-empty": (lambda d: write_shard(d, b""), "empty file"),
    "shard-truncated": (
        lambda d: write_shard(d, st_bytes({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)),
        "safetensors",
    ),
    "shard-huge-header": (lambda d: write_shard(d, st_bytes({}, length=2**62)), "header too large"),
    "shard-header-past-end": (lambda d: write_shard(d, st_bytes({"a": F32_2}, length=10**6)), "header length"),
    "shard-overlap": (
        lambda d: write_shard(
            d, st_bytes({"a": F32_2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12)
        ),
        "invalid offset",
    ),
    "shard-overflow": (
        lambda d: write_shard(
            d, st_bytes({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8)
        ),
        "overflow",
    ),
    "shard-duplicate-name": (
        lambda d: write_shard(
            d,
            st_bytes(
                None,
                b"\0" * 8,
                raw=json.dumps({"a": F32_2}).encode()[:-1] + b', "a": ' + json.dumps(F32_2).encode() + b"}",
            ),
        ),
        "names tensor 'a' twice",
    ),
    "index-weight-map-list": (
        lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": ["a"]}'),
        "weight_map",
    ),
    "index-parent": (lambda d: _patch_index(d, "../outside.safetensors"), "outside the model directory"),
    "index-absolute": (lambda d: _patch_index(d, "/etc/hostname"), "outside the model directory"),
    "index-missing-shard": (lambda d: _patch_index(d, "model-99999-of-99999.safetensors"), "do not exist"),
    "index-symlink-escape": (lambda d: _symlink_escape(d), "through a symlink"),
}


def _patch_config(d: Path, **values):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(values)
    (d / "config.json").write_text(json.dumps(cfg))


def _patch_index(d: Path, shard: str):
    path = d / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = shard
    path.write_text(json.dumps(index))


def _symlink_escape(d: Path):
    outside = d.parent / "elsewhere.safetensors"
    outside.write_bytes(st_bytes({"a": F32_2}, b"\0" * 8))
    (d / "link.safetensors").symlink_to(outside)
    _patch_index(d, "link.safetensors")


def snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in d.rglob("*")}


@pytest.mark.parametrize("command", ["inspect", "generate"])
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_corpus(case, command, tiny_copy, capsys, monkeypatch):
    damage, needle = CORPUS[case]
    damage(tiny_copy)
    before = snapshot(tiny_copy)
    if command == "inspect":
        args = ["inspect", str(tiny_copy)]
    else:
        args = ["generate", "-m", str(tiny_copy), "--device", "cpu", "hello", "-n", "2"]
    run = run_cli(args, capsys, monkeypatch)
    assert_clean_error(run, 1, needle)
    assert str(tiny_copy) in run.stderr or "config.json" in run.stderr or ".safetensors" in run.stderr
    assert snapshot(tiny_copy) == before


def test_pickle_checkpoint_never_unpickled(tiny_dir, tmp_path, capsys, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text((tiny_dir / "config.json").read_text())
    sentinel = tmp_path / SENTINEL_NAME
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(str(sentinel))))
    inspected = run_cli(["inspect", str(model), "--json"], capsys, monkeypatch)
    assert inspected.code == 0
    assert any("pickle" in c for c in inspected.json()["checks"])
    refused = run_cli(["generate", "-m", str(model), "hi"], capsys, monkeypatch)
    assert_clean_error(refused, 1, "--allow-pickle")
    assert not sentinel.exists()


def _with_custom_code(model, sentinel, model_type=None):
    (model / "modeling_evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "modeling_evil.C", "AutoModelForCausalLM": "modeling_evil.M"}
    if model_type:
        cfg["model_type"] = model_type
    (model / "config.json").write_text(json.dumps(cfg))


def test_remote_code_never_runs_and_is_never_prompted(tiny_copy, capsys, monkeypatch):
    """An auto_map on a model_type transformers does not know: refused, never prompted, never run."""
    sentinel = tiny_copy.parent / SENTINEL_NAME
    _with_custom_code(tiny_copy, sentinel, model_type="evil_arch")
    # "y" on stdin must not be taken as consent: stdin is the user's data.
    run = run_cli(["generate", "-m", str(tiny_copy), "hi"], capsys, monkeypatch, stdin=b"y\ny\n")
    assert_clean_error(run, 1, "--trust-remote-code")
    assert run_cli(["inspect", str(tiny_copy)], capsys, monkeypatch).code == 0
    assert not sentinel.exists()


def test_auto_map_on_a_native_model_type_uses_transformers_own_classes(tiny_copy, tiny_dir, capsys, monkeypatch):
    """As transformers does without trust_remote_code (Phi-3-mini's config.json has such an auto_map)."""
    sentinel = tiny_copy.parent / SENTINEL_NAME
    _with_custom_code(tiny_copy, sentinel)
    data = run_cli(["inspect", str(tiny_copy), "--json"], capsys, monkeypatch).json()
    plain = run_cli(["inspect", str(tiny_dir), "--json"], capsys, monkeypatch).json()
    assert data["parameters"]["total"] == plain["parameters"]["total"] and data["parameters"]["class"]
    assert any("custom code" in c and "LlamaForCausalLM" in c for c in data["checks"])
    run = run_cli(["generate", "-m", str(tiny_copy), "hi", "-n", "3", "--greedy", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    assert "auto_map names custom code" in run.stderr
    same = run_cli(["generate", "-m", str(tiny_dir), "hi", "-n", "3", "--greedy", "--json"], capsys, monkeypatch)
    assert run.json()["outputs"][0]["token_ids"] == same.json()["outputs"][0]["token_ids"]
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"GGML" + b"\0" * 40, "bad magic"),
        (gguf_header(version=99), "version 99"),
        (gguf_header(tensors=2**62), "impossible"),
        (gguf_header(kvs=2**40), "impossible"),
        (gguf_header(kvs=1) + struct.pack("<Q", 2**60) + b"key", "malformed"),
        (b"GGUF\x03", "truncated"),
    ],
)
def test_bad_gguf_files(content, needle, tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    assert_clean_error(run_cli(["inspect", str(path)], capsys, monkeypatch), 1, "bad.gguf", needle)
    home = Path(os.environ["LLMCLI_HOME"])
    before = sorted(p.name for p in (home / "models").glob("*")) if (home / "models").exists() else []
    assert_clean_error(run_cli(["generate", "-m", str(path), "hi"], capsys, monkeypatch), 1, "bad.gguf")
    after = sorted(p.name for p in (home / "models").glob("*") if not p.name.endswith(".lock"))
    assert [n for n in after if n not in before] == []


def test_write_to_full_device_is_a_clean_error(tiny_dir):
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "llmcli", "inspect", str(tiny_dir), "--only", "config"],
            stdout=full,
            stderr=subprocess.PIPE,
            env=cli_env(),
            cwd=ROOT,
            timeout=120,
        )
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.strip().splitlines() == ["llmcli: error: stdout: cannot write output: No space left on device"]


def test_no_color_and_pipes_have_no_escape_codes(tiny_dir):
    env = cli_env(NO_COLOR="1", LLMCLI_OUTPUT="")
    proc = subprocess.run(
        [sys.executable, "-m", "llmcli", "inspect", str(tiny_dir)], capture_output=True, env=env, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0
    assert b"\x1b[" not in proc.stdout and b"\x1b[" not in proc.stderr


def test_long_listing_into_head_is_quiet(tiny_dir):
    proc = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m llmcli inspect {tiny_dir} --tensors | head -n 3"],
        capture_output=True,
        env=cli_env(),
        cwd=ROOT,
        timeout=120,
    )
    assert proc.stdout.count(b"\n") == 3
    assert proc.stderr == b""


def test_debug_env_shows_traceback(tmp_path, capsys, monkeypatch):
    (tmp_path / "config.json").write_text("nope")
    monkeypatch.setenv("LLMCLI_DEBUG", "1")
    run = run_cli(["inspect", str(tmp_path)], capsys, monkeypatch)
    assert run.code == 1 and "Traceback" in run.stderr and "not valid JSON" in run.stderr


def test_cuda_oom_during_generation_keeps_partial_text(tiny_dir, capsys, monkeypatch):
    import torch
    from transformers import LlamaForCausalLM

    def failing_generate(self, input_ids=None, streamer=None, **kwargs):
        streamer.put(input_ids)
        for token in (1, 2, 3):
            streamer.put(torch.tensor([token]))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(LlamaForCausalLM, "generate", failing_generate)
    run = run_cli(["generate", "-m", str(tiny_dir), "--device", "cpu", "hello", "--raw"], capsys, monkeypatch)
    assert run.code == 1
    assert run.stderr.strip().splitlines() == [
        "llmcli: error: CUDA out of memory during generation on cpu (lower --max-new-tokens or --batch-size, or "
        "use --dtype bfloat16)"
    ]
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(str(tiny_dir)).decode([1, 2, 3], skip_special_tokens=True)
    assert run.stdout == expected + "\n"


# Config keys through which other loaders imported a model directory's code with no flag at all (mlx-lm's
# `model_file`; pipelines' `custom_pipelines`): every loading command refuses them before anything runs.
CODE_LOADING = {
    "model-file": ("config.json", "model_file", "modeling_evil.py"),
    "custom-pipelines": ("config.json", "custom_pipelines", {"text-generation": {"impl": "modeling_evil.P"}}),
    "tokenizer-model-file": ("tokenizer_config.json", "model_file", "modeling_evil.py"),
}


@pytest.mark.parametrize("command", [["generate", "hi", "-n", "2"], ["score", "hi there"], ["tokenize", "hi"]])
@pytest.mark.parametrize("case", sorted(CODE_LOADING))
def test_code_loading_keys_are_refused(case, command, tiny_copy, capsys, monkeypatch):
    file, key, value = CODE_LOADING[case]
    sentinel = tiny_copy.parent / SENTINEL_NAME
    (tiny_copy / "modeling_evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    data = json.loads((tiny_copy / file).read_text())
    data[key] = value
    (tiny_copy / file).write_text(json.dumps(data))
    run = run_cli([command[0], "-m", str(tiny_copy), *command[1:]], capsys, monkeypatch)
    assert_clean_error(run, 1, f"'{key}' names Python code to import", file)
    assert not sentinel.exists()
    shown = run_cli(["inspect", str(tiny_copy), "--only", "config", "--json"], capsys, monkeypatch).json()
    assert [f["path"] for f in shown["remote_code"]["files"]] == ["modeling_evil.py"] and not sentinel.exists()
