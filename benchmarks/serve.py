"""llmcli serve on the default model (CPU): the figures in docs/performance.md.

(a) wall time of a one-shot `llmcli generate --greedy -n 20` against the same call with --server;
(b) aggregate decode tok/s for 1, 4, 8, 16 concurrent clients of 128 greedy tokens each.
Run: .venv/bin/python benchmarks/serve.py [--reps 5] > result.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LLMCLI = str(ROOT / ".venv" / "bin" / "llmcli")
PROMPT = "What is the capital of France?"


def start() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([LLMCLI, "serve", "--port", "0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    line = ""
    while "serving" not in line:
        line = proc.stderr.readline().decode()
        if not line:
            raise SystemExit("the server did not start")
    return proc, line.split(" at ")[1].split(" ")[0]


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def one_shot(url: str, reps: int) -> dict:
    local = [LLMCLI, "generate", "--greedy", "-n", "20", PROMPT]
    remote = [*local, "--server", url]
    wall(local), wall(remote)
    a, b = [], []
    for _ in range(reps):
        a.append(wall(local))
        b.append(wall(remote))
    return {"one_shot_seconds": statistics.median(a), "server_seconds": statistics.median(b),
            "ratio": statistics.median(b) / statistics.median(a)}  # fmt: skip


def concurrent(url: str, clients: int) -> dict:
    body = {"prompt": PROMPT, "max_tokens": 128, "ignore_eos": True, "temperature": 0}

    def ask(_i: int) -> int:
        response = httpx.post(url + "/v1/completions", json=body, timeout=600)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(ask, range(clients)))
    seconds = time.perf_counter() - started
    return {"clients": clients, "tokens": tokens, "seconds": seconds, "aggregate_tok_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    proc, url = start()
    try:
        report = {"one_shot": one_shot(url, args.reps), "concurrent": [concurrent(url, n) for n in (1, 4, 8, 16)]}
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
