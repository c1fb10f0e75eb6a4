"""Other engines and other clients: what an engine silently ignores is caught (a fake server that ignores n,
stop and max_tokens as real ones do), llmcli-only commands refuse other engines, and transformers' own chat
client works against llmcli serve."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llmcli.foreign.checks import findings
from tests.fake_engine import TEXT, TOKENS, running
from tests.helpers import ROOT, assert_clean_error, cli_env, run_cli
from tests.server.test_serve import start_server

LLAMA = "llama-cpp-python's server 0.3.36"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A fresh fake llama-cpp-python server and a fresh memory of what engines ignore."""
    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path / "home"))
    with running() as server:
        yield server


def remembered(tmp_path):
    return json.loads((tmp_path / "home" / "engines.json").read_text())


def test_n_is_made_up_for_with_derived_seeds_and_remembered(fake, tmp_path, capsys, monkeypatch):
    args = ["generate", "--server", fake.url, "Hi", "--num-return-sequences", "3", "-t", "0.7", "--seed", "5"]
    run = run_cli([*args, "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    record = run.json()
    assert len(record["outputs"]) == 3
    assert record["compensated"][0]["how"] == f"3 sequences from 3 requests ({LLAMA} ignores n), seeds 5, 6, 7"
    sent = fake.bodies("/v1/chat/completions")
    assert [b.get("n") for b in sent] == [3, None, None] and [b["seed"] for b in sent] == [5, 6, 7]
    assert remembered(tmp_path)[fake.url]["ignores"] == {"n": "returned 1 of 3 sequences"}
    # The next call knows: one request per sequence from the start, and says so on stderr.
    again = run_cli(args, capsys, monkeypatch)
    assert again.code == 0 and again.stdout.count(TEXT) == 3
    assert "--num-return-sequences: 3 sequences from 3 requests" in again.stderr
    assert [b.get("n") for b in fake.bodies("/v1/chat/completions")[3:]] == [None, None, None]


@pytest.mark.parametrize(
    "flag,field,evidence",
    [
        (["--max-new-tokens", "5"], "max_tokens", f"returned {TOKENS} tokens for max_tokens 5"),
        (["--stop", "\n"], "stop", "returned a text that goes on past the stop string '\\n'"),
    ],
)
def test_a_dropped_flag_is_exit_1_then_refused_up_front(fake, tmp_path, capsys, monkeypatch, flag, field, evidence):
    args = ["generate", "--server", fake.url, "Hi", *flag]
    run = run_cli([*args, "--json"], capsys, monkeypatch)
    assert_clean_error(run, 1, f"{LLAMA} {evidence}: it ignores {field} ({flag[0]})")
    assert remembered(tmp_path)[fake.url]["ignores"] == {field: evidence}
    sent = len(fake.requests)
    again = run_cli(args, capsys, monkeypatch)
    assert_clean_error(again, 2, f"{flag[0]} cannot travel to {LLAMA}: it ignores {field} (an earlier answer")
    assert len(fake.requests) == sent  # refused before anything was sent
    assert run_cli(["generate", "--server", fake.url, "Hi"], capsys, monkeypatch).code == 0


def test_ps_needs_llmcli_serve(fake, capsys, monkeypatch):
    run = run_cli(["ps", "--server", fake.url], capsys, monkeypatch)
    assert_clean_error(run, 2, f"ps needs llmcli serve, and {LLAMA} answers at {fake.url}")


def test_show_config_prints_the_body_with_its_prompt(fake, capsys, monkeypatch):
    run = run_cli(["generate", "--server", fake.url, "--show-config", "-t", "0.5", "Hi there"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    body = run.json()
    assert body["messages"] == [{"role": "user", "content": "Hi there"}] and body["temperature"] == 0.5
    assert body["stream"] is True and body["model"] == "fake-model"
    raw = run_cli(["generate", "--server", fake.url, "--show-config", "--raw", "Hi", "--json"], capsys, monkeypatch)
    assert raw.json()["prompt"] == "Hi" and "stream" not in raw.json()
    assert fake.requests == []


def test_a_generic_openai_server_is_checked_too(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LLMCLI_HOME", str(tmp_path / "home"))
    with running(llama_cpp=False) as generic:
        run = run_cli(["generate", "--server", generic.url, "Hi", "-n", "4"], capsys, monkeypatch)
    # Streamed: the text was shown as it came; then the finding, one line, exit 1.
    assert run.code == 1 and run.stdout.startswith(TEXT)
    assert run.stderr.strip().splitlines() == [
        "llmcli: error: an OpenAI-compatible server returned 30 tokens for max_tokens 4: it ignores max_tokens "
        "(--max-new-tokens)"
    ]


def test_findings_read_what_came_back():
    ask = {"n": 2, "max_tokens": 10, "stop": ["END"], "logprobs": True}
    ok = {"choices": [{"text": "fine END", "logprobs": {}, "token_ids": [1]}] * 2, "usage": {"completion_tokens": 9}}
    assert findings(ask, ok) == []  # a stop string at the very end: the engine kept it, and stopped there
    bad = {"choices": [{"text": "fine END more"}], "usage": {"completion_tokens": 25}}
    assert [f.field for f in findings(ask, bad)] == ["n", "max_tokens", "stop", "logprobs"]


# ---------------------------------------------------------------- transformers chat against llmcli serve


@pytest.fixture(scope="module")
def keyless_server(tiny_dir):
    proc, url = start_server(tiny_dir, "--dtype", "float32", key=None)  # answers compared with local float32
    yield url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_load_model_events_and_generation_config(keyless_server, tiny_dir, capsys, monkeypatch):
    def events(name):
        with httpx.stream("POST", keyless_server + "/load_model", json={"model": name}, timeout=60) as response:
            return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]

    assert events(tiny_dir.name) == [{"status": "ready", "cached": True, "model": tiny_dir.name}]
    [error] = events("elsewhere")
    assert error["status"] == "error" and "'elsewhere' is not served here" in error["message"]

    config = {"do_sample": False, "max_new_tokens": 7, "transformers_version": "5.24.0"}
    body = {"model": tiny_dir.name, "messages": [{"role": "user", "content": "Hi"}],
            "generation_config": json.dumps(config)}  # fmt: skip
    answer = httpx.post(keyless_server + "/v1/chat/completions", json=body, timeout=60).json()
    local = run_cli(["generate", "-m", str(tiny_dir), "Hi", "--greedy", "-n", "7", "--dtype", "float32", "--json"],
                    capsys, monkeypatch)  # fmt: skip
    assert answer["usage"]["completion_tokens"] == len(local.json()["outputs"][0]["token_ids"])
    assert answer["choices"][0]["message"]["content"] == local.json()["outputs"][0]["text"]
    config["eos_token_id"] = [1, 2]
    body["generation_config"] = json.dumps(config)
    refused = httpx.post(keyless_server + "/v1/chat/completions", json=body, timeout=60)
    assert refused.status_code == 400 and "eos_token_id cannot be honoured" in refused.json()["error"]["message"]


def test_transformers_chat_gets_an_answer(keyless_server, tiny_dir):
    """transformers' own chat client, driven through its prompt: load, one question, an 8-token answer."""
    client = Path(sys.executable).parent / "transformers"
    args = [str(client), "chat", tiny_dir.name, keyless_server, "max_new_tokens=8", "do_sample=False"]
    # huggingface_hub's offline mode refuses every URL, loopback included; this client talks to loopback only.
    env = cli_env(HF_HUB_OFFLINE="0")
    proc = subprocess.run(args, input=b"hello there\nn\n!exit\n", capture_output=True, cwd=ROOT, env=env,
                          timeout=180)  # fmt: skip
    out = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, out + proc.stderr.decode("utf-8", "replace")
    assert f"{tiny_dir.name} was already loaded" in out
    assert f"<{tiny_dir.name}>:" in out and "Generation stopped after reaching the token limit" in out
