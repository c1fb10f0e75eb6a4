"""`llmcli serve --quantize int4`: concurrent requests share batches on the int4 kernel and each answer is the
local int4 run's, token for token (the kernel computes each row alone, so a batched row is its solo row);
`ps` shows the scheme and its size."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.helpers import ROOT, cli_env, run_cli
from tests.server.test_serve import KEY, post, start_server

INT4 = ["--quantize", "int4", "--dtype", "float32"]


def test_int4_requests_batch_and_equal_the_local_int4_run(tiny_dir, capsys, monkeypatch):
    prompts = [f"prompt number {i}" for i in range(4)]
    expected = []
    for prompt in prompts:
        run = run_cli(["generate", "-m", str(tiny_dir), prompt, "--raw", "--greedy", "-n", "12", *INT4, "--json"],
                      capsys, monkeypatch)  # fmt: skip
        assert run.code == 0, run.stderr
        expected.append(run.json()["outputs"][0]["token_ids"])
    proc, url = start_server(tiny_dir, *INT4)
    try:

        def ask(prompt):
            args = ["generate", "--server", url, prompt, "--raw", "--greedy", "-n", "12", "--json"]
            return subprocess.run([sys.executable, "-m", "llmcli", *args], capture_output=True,
                                  env=cli_env(LLMCLI_API_KEY=KEY), cwd=ROOT)  # fmt: skip

        with ThreadPoolExecutor(4) as pool:
            records = [json.loads(r.stdout) for r in pool.map(ask, prompts)]
        assert [r["outputs"][0]["token_ids"] for r in records] == expected
        # Batching, with requests that surely overlap (the clients above each start a Python first, and on a
        # busy machine their twelve tokens may be done before the next arrives)
        body = {"max_tokens": 32, "temperature": 0, "ignore_eos": True}
        with ThreadPoolExecutor(8) as pool:
            burst = list(pool.map(lambda i: post(url, "/v1/completions", {**body, "prompt": f"burst {i}"}).json(),
                                  range(8)))  # fmt: skip
        assert any(answer["batch"]["shared"] for answer in burst), burst[0]["batch"]
        monkeypatch.setenv("LLMCLI_API_KEY", KEY)
        status = run_cli(["ps", "--server", url, "--json"], capsys, monkeypatch).json()["models"][0]
        assert status["quantize"] == "int4" and status["quantization"]["scheme"] == "int4"
        assert status["quantization"]["quantized_layers"] == 14 and status["quantization"]["kept"] == 1
        shown = run_cli(["ps", "--server", url], capsys, monkeypatch).stdout
        assert "float32 + int4 g32 (5.0 bits)" in shown
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
