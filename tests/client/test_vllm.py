"""A real vLLM (its CPU build, in a venv of its own: scripts/setup-vllm.sh) behind --server, on the default
model: greedy tokens equal local float32 greedy, score and next-token log-probabilities within 0.02 nats,
a flag vLLM cannot honour refused, and a batch job killed midway then resumed.

The server starts once per run (about 2.5 minutes of compilation on 2 cores). `.ci/run` sets the venv up;
without it (`.venv-vllm/bin/python`, or $LLMCLI_VLLM_PYTHON) these tests are skipped, saying why.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.client.test_jobs import killed_and_resumed
from tests.helpers import ROOT, assert_clean_error, run_cli
from tests.test_schemas import schema

VLLM_PYTHON = os.environ.get("LLMCLI_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
pytestmark = pytest.mark.skipif(
    not Path(VLLM_PYTHON).exists() and not os.environ.get("LLMCLI_VLLM_URL"),
    reason="no vLLM venv: bash scripts/setup-vllm.sh (CI runs it)",
)
PROMPT = "What is the capital of France?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm(default_model_dir):
    """The URL of a vLLM server on the default model ($LLMCLI_VLLM_URL reuses one already running)."""
    if os.environ.get("LLMCLI_VLLM_URL"):
        yield os.environ["LLMCLI_VLLM_URL"]
        return
    port = free_port()
    args = [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(default_model_dir),
            "--dtype", "float32", "--max-model-len", "2048", "--port", str(port)]  # fmt: skip
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    log = open(default_model_dir.parent.parent / "vllm.log", "wb")  # noqa: SIM115 - read when it fails to start
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while True:
        assert proc.poll() is None, (default_model_dir.parent.parent / "vllm.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "vLLM did not start in 15 minutes"
        try:
            if httpx.get(url + "/v1/models", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(2)
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def local(default_model_dir, args, capsys, monkeypatch):
    run = run_cli([*args, "-m", str(default_model_dir), "--dtype", "float32", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    return run.json()


def remote(vllm, args, capsys, monkeypatch):
    run = run_cli([*args, "--server", vllm, "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    return run.json()


@pytest.mark.parametrize("raw", [[], ["--raw"]], ids=["chat template", "raw"])
def test_greedy_tokens_equal_local_float32(vllm, default_model_dir, capsys, monkeypatch, raw):
    args = ["generate", PROMPT, "--greedy", "-n", "24", *raw]
    far, near = remote(vllm, args, capsys, monkeypatch), local(default_model_dir, args, capsys, monkeypatch)
    assert far["prompt_token_ids"] == near["prompt_token_ids"]
    assert far["outputs"][0]["token_ids"] == near["outputs"][0]["token_ids"]
    assert far["outputs"][0]["text"] == near["outputs"][0]["text"]
    assert far["model"]["engine"].startswith("vLLM ")
    jsonschema.validate(far, schema("generate.schema.json"))


def test_penalties_and_logit_bias_mean_what_vllm_means(vllm, default_model_dir, capsys, monkeypatch):
    """The penalties count the output only, before temperature, as vLLM applies them: greedy tokens agree."""
    prompt = "Write one sentence about the sea."
    plain = local(default_model_dir, ["generate", prompt, "--greedy", "-n", "24"], capsys, monkeypatch)
    banned = plain["outputs"][0]["token_ids"][1]
    args = ["generate", prompt, "--greedy", "-n", "24", "--frequency-penalty", "0.7"]
    args += ["--presence-penalty", "0.4", "--logit-bias", f"{banned}=-100"]
    far, near = remote(vllm, args, capsys, monkeypatch), local(default_model_dir, args, capsys, monkeypatch)
    assert far["outputs"][0]["token_ids"] == near["outputs"][0]["token_ids"] != plain["outputs"][0]["token_ids"]
    assert banned not in near["outputs"][0]["token_ids"]


def test_a_dpo_reference_on_vllm(vllm, default_model_dir, tmp_path, capsys, monkeypatch):
    """The reference's prompt log-probabilities by token ids: the local reference's figures within 0.02 nats."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " Rome."}) + "\n"
    )
    base = ["dpo", str(default_model_dir), "-f", str(pairs), "--dtype", "float32", "--each"]
    near = json.loads(run_cli([*base, "--ref", str(default_model_dir)], capsys, monkeypatch).stdout)
    run = run_cli([*base, "--ref-server", vllm], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    far = json.loads(run.stdout)
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        assert abs(far[key] - near[key]) < 0.02, key


def test_logprobs_score_and_next_token_match_local_float32(vllm, default_model_dir, capsys, monkeypatch):
    args = ["generate", PROMPT, "--raw", "--greedy", "-n", "6", "--logprobs", "3"]
    far, near = remote(vllm, args, capsys, monkeypatch), local(default_model_dir, args, capsys, monkeypatch)
    for a, b in zip(far["outputs"][0]["logprobs"], near["outputs"][0]["logprobs"], strict=True):
        assert a["token_id"] == b["token_id"] and a["token"] == b["token"] and abs(a["logprob"] - b["logprob"]) < 0.02
        assert [t["token_id"] for t in a["top"]] == [t["token_id"] for t in b["top"]]
    args = ["score", "The quick brown fox jumps over the lazy dog."]
    far = remote(vllm, args, capsys, monkeypatch)
    near = run_cli([*args, "-m", str(default_model_dir), "--json"], capsys, monkeypatch).json()  # float32 on CPU
    assert far["token_ids"] == near["token_ids"] and abs(far["mean_nll"] - near["mean_nll"]) < 0.02
    pairs = zip(far["tokens"][1:], near["tokens"][1:], strict=True)
    assert all(abs(a["logprob"] - b["logprob"]) < 0.02 for a, b in pairs)
    args = ["next-token", "The capital of France is", "--top", "5"]
    far = remote(vllm, args, capsys, monkeypatch)
    near = run_cli([*args, "-m", str(default_model_dir), "--json"], capsys, monkeypatch).json()
    assert [c["token_id"] for c in far["candidates"]] == [c["token_id"] for c in near["candidates"]]
    pairs = zip(far["candidates"], near["candidates"], strict=True)
    assert all(abs(a["prob"] - b["prob"]) < 0.01 for a, b in pairs)


def test_a_flag_vllm_cannot_honour_is_a_usage_error(vllm, capsys, monkeypatch):
    run = run_cli(["generate", "--server", vllm, "--typical-p", "0.5", "hi"], capsys, monkeypatch)
    assert_clean_error(run, 2, "--typical-p", "vLLM")
    args = ["generate", "--server", vllm, "--show-config", "--top-k", "5", "-n", "3", "Hi"]
    shown = run_cli(args, capsys, monkeypatch)
    assert shown.code == 0 and shown.json()["top_k"] == 5 and shown.json()["max_tokens"] == 3
    assert shown.json()["messages"] == [{"role": "user", "content": "Hi"}]


def test_a_killed_batch_job_resumes_against_vllm(vllm, tmp_path):
    model = httpx.get(vllm + "/v1/models").json()["data"][0]["id"]
    records = killed_and_resumed(vllm, tmp_path, model=model, count=24, kill_after=4)
    assert all(r["outputs"][0]["token_ids"] for r in records)


def test_structured_output_travels_to_vllm(vllm, capsys, monkeypatch):
    schema = '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}'
    args = ["generate", "--server", vllm, "Name a city as JSON.", "--json-schema", schema, "-n", "40", "--json"]
    run = run_cli(args, capsys, monkeypatch)
    assert run.code == 0, run.stderr
    out = run.json()["outputs"][0]
    assert out["valid"] is True and isinstance(json.loads(out["text"])["city"], str)
    assert run.json()["generate_kwargs"]["structured_outputs"] == {"json": json.loads(schema)}
    regex = run_cli(["generate", "--server", vllm, "hi", "--regex", "[0-9]{3}", "--raw"], capsys, monkeypatch)
    assert regex.code == 0 and re.fullmatch("[0-9]{3}", regex.stdout.rstrip("\n")), regex.stdout


def test_windowed_score_and_a_reference_through_vllm(vllm, default_model_dir, tmp_path, capsys, monkeypatch):
    """Strided windows sent as token ids: the local float32 figures within 0.02 nats; a reference file from
    vLLM's top 20 compares locally against the same model as nearly nothing."""
    text = "The quick brown fox jumps over the lazy dog. " * 12
    args = ["score", text, "--window", "48", "--stride", "24"]
    ref = tmp_path / "vllm.ref"
    far = remote(vllm, [*args, "--save-ref", str(ref)], capsys, monkeypatch)
    near = run_cli([*args, "-m", str(default_model_dir), "--json"], capsys, monkeypatch).json()
    assert [w["scored"] for w in far["windows"]] == [w["scored"] for w in near["windows"]]
    assert abs(far["mean_nll"] - near["mean_nll"]) < 0.02 and far["reference"]["k"] == 20
    compared = run_cli(["compare", "--base-ref", str(ref), str(default_model_dir), "--text", text, "--json"],
                       capsys, monkeypatch)  # fmt: skip
    assert compared.code == 0, compared.stderr
    data = compared.json()
    assert data["reference"]["tail_samples"] == 0 and data["kl"]["mean"] < 0.01 and data["top1_agreement"] > 0.95


def test_sample_on_vllm_draws_each_completion_under_its_seed(vllm, tmp_path, capsys, monkeypatch):
    """sample --server on vLLM: N completions a prompt, each a request under its own seed (so the same run draws
    the same again), scored here; greedy, every completion is vLLM's greedy answer."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "The capital of France is", "answer": "Paris"}) + "\n")
    funcs = tmp_path / "funcs.py"
    funcs.write_text("def said(prompts, completions, answer, **kw):\n"
                     "    return [float(a in c) for c, a in zip(completions, answer)]\n")  # fmt: skip
    args = ["sample", "--server", vllm, "-f", str(prompts), "-n", "3", "--max-new-tokens", "8", "--seed", "4",
            "--reward-func", f"{funcs}:said", "--json"]  # fmt: skip
    first, again = (run_cli(args, capsys, monkeypatch) for _ in range(2))
    assert first.code == 0, first.stderr
    texts = [c["text"] for c in first.json()["groups"][0]["completions"]]
    assert len(texts) == 3 and texts == [c["text"] for c in again.json()["groups"][0]["completions"]]
    assert [c["seed"] for c in first.json()["groups"][0]["completions"]] == [4, 5, 6]
    greedy = run_cli([*args[:-1], "--greedy", "--json"], capsys, monkeypatch).json()["groups"][0]["completions"]
    assert len({c["text"] for c in greedy}) == 1
