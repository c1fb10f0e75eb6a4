"""`llmcli chat` driven by feeding stdin: history through the chat template, /commands, clean exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.helpers import ROOT, cli_env, default_sigint, run_cli


def test_conversation_commands_and_history(tiny_dir, tmp_path, capsys, monkeypatch):
    saved = tmp_path / "chat.json"
    script = (
        "\n".join(
            [
                "What is the capital of France?",
                "/set temperature 0.7",
                "/set top_k nope",
                "/system Be brief.",
                "And of Italy?",
                "/stats",
                f"/save {saved}",
                "/reset",
                "/bogus",
                "/help",
                "Hello again",
                f"/save {saved}.2",
            ]
        )
        + "\n"
    )
    run = run_cli(["chat", "-m", str(tiny_dir), "-n", "5", "--seed", "7"], capsys, monkeypatch, stdin=script.encode())
    assert run.code == 0, run.stderr
    assert len(run.stdout.splitlines()) >= 3  # one answer line per question
    assert "temperature = 0.7" in run.stderr
    assert "/set top_k: 'nope' is not a int" in run.stderr
    assert "unknown command /bogus" in run.stderr
    assert "llmcli stats" in run.stderr and "/reset" in run.stderr
    data = json.loads(saved.read_text())
    roles = [m["role"] for m in data["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert data["messages"][0]["content"] == "Be brief."
    assert data["messages"][3]["content"] == "And of Italy?"
    assert data["generate_kwargs"]["temperature"] == 0.7 and data["generate_kwargs"]["do_sample"] is True
    after_reset = json.loads((tmp_path / "chat.json.2").read_text())
    assert [m["role"] for m in after_reset["messages"]] == ["system", "user", "assistant"]


def test_history_reaches_the_template(tiny_dir, capsys, monkeypatch):
    from llmcli.engine.generate import generation

    seen = []
    original = generation.stream_generate

    def spy(*args, **kwargs):
        seen.append(kwargs["encoded"][0])
        return original(*args, **kwargs)

    monkeypatch.setattr(generation, "stream_generate", spy)
    run = run_cli(
        ["chat", "-m", str(tiny_dir), "-n", "3"], capsys, monkeypatch, stdin=b"first question\nsecond question\n"
    )
    assert run.code == 0, run.stderr
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    second = tok.decode(seen[1])
    assert "first question" in second and "second question" in second
    assert second.count("<|im_start|>assistant") == 2


def test_ctrl_c_stops_the_answer_and_ctrl_d_exits(default_model_dir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmcli", "chat", "-n", "300"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=ROOT,
        preexec_fn=default_sigint,
    )
    proc.stdin.write(b"Write a very long story about a dragon.\n")
    proc.stdin.flush()
    first = proc.stdout.read(10)
    first += proc.stdout.read(10)  # still answering: the signal lands mid-answer
    assert len(first) == 20
    os.kill(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(input=b"/exit\n", timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
