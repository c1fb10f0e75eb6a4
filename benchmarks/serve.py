"""llmcli serve on the default model (CPU): the figures in docs/performance.md.

(a) wall time of a one-shot `llmcli generate --greedy -n 20` against the same call with --server;
(b) aggregate decode tok/s for 1, 4, 8, 16 concurrent clients of 128 greedy tokens each, for the default
    dtype (bfloat16 on CPU: no batching) and --dtype float32 (batched), with each answer checked against
    the one a lone request gets;
(c) the same load against another OpenAI-compatible server already running (vLLM's CPU build: --peer URL);
(d) warm single-stream decode with --compile.
Run: .venv/bin/python benchmarks/serve.py [--reps 5] [--peer http://127.0.0.1:8100] > result.json
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
EXTRA: dict = {}  # more request fields for the peer (--peer-no-eos: a logit_bias where ignore_eos is ignored)


def start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([LLMCLI, "serve", "--port", "0", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
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


PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain gravity to a child.",
    "List three prime numbers.",
    "Who wrote Hamlet?",
    "Describe a cat in one sentence.",
    "Why is the sky blue?",
    "Name a famous painter.",
]


def ask(url: str, model: str, prompt: str, tokens: int = 128, http: httpx.Client | None = None) -> tuple[str, int]:
    """The text and the tokens the server says it generated (an engine that ignores `ignore_eos` may stop
    early: the aggregate counts what came back, not what was asked)."""
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "ignore_eos": True, "temperature": 0, **EXTRA}
    response = (http or httpx).post(url + "/v1/completions", json=body, timeout=600)
    response.raise_for_status()
    answer = response.json()
    return answer["choices"][0]["text"], int((answer.get("usage") or {}).get("completion_tokens", tokens))


def concurrent(url: str, model: str, clients: int, *, shared: bool) -> dict:
    """`clients` requests at once, different prompts; each answer compared with a lone request's.
    `shared`: the threads share one HTTP client (a connection pool, as the openai client and load generators
    do); otherwise each opens its own, which spreads their arrival over a few hundred ms on this CPU."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(clients)]
    alone = {p: ask(url, model, p)[0] for p in set(prompts)}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    http = httpx.Client(limits=limits) if shared else None
    if http is not None:  # open the connections before the clock starts
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda _i: http.get(url + "/v1/models"), range(clients)))
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda p: ask(url, model, p, http=http), prompts))
    seconds = time.perf_counter() - started
    same = sum(t == alone[p] for (t, _), p in zip(answers, prompts, strict=True))
    tokens = sum(n for _, n in answers)
    return {"clients": clients, "seconds": round(seconds, 2), "aggregate_tok_s": round(tokens / seconds, 1),
            "tokens": tokens, "same_as_alone": f"{same}/{clients}"}  # fmt: skip


def load_curve(url: str, model: str, *, shared: bool = False) -> list[dict]:
    ask(url, model, PROMPTS[0], 8)  # warm-up
    return [concurrent(url, model, n, shared=shared) for n in (1, 4, 8, 16)]


def served(args: list[str], work) -> dict:
    proc, url = start(*args)
    try:
        return work(url)
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def compiled_decode(url: str) -> dict:
    body = {"prompts": [PROMPTS[0]], "flags": {"do_sample": False, "max_new_tokens": 128, "min_new_tokens": 128}}
    rates = []
    for _ in range(3):  # the first call compiles
        response = httpx.post(url + "/llmcli/v1/generate", json=body, timeout=900)
        response.raise_for_status()
        rates.append(json.loads(response.text.splitlines()[0])["stats"]["decode_tokens_per_second"])
    return {"decode_tok_s_by_call": rates}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--peer", help="URL of another OpenAI-compatible server on the same model (vLLM)")
    parser.add_argument("--parts", default="one_shot,default,float32,float32_shared,compile,peer")
    parser.add_argument(
        "--peer-no-eos", help="end-of-text ids the peer must not sample (a logit_bias of -100), e.g. 0,2 for "
        "SmolLM2, for a peer that ignores vLLM's ignore_eos (llama-cpp-python's server)"
    )  # fmt: skip
    args = parser.parse_args()
    parts = args.parts.split(",")
    runs = {
        "one_shot": lambda: served([], lambda url: one_shot(url, args.reps)),
        "default": lambda: served([], lambda url: load_curve(url, "default")),
        "float32": lambda: served(["--dtype", "float32"], lambda url: load_curve(url, "default")),
        "float32_shared": lambda: served(["--dtype", "float32"], lambda url: load_curve(url, "default", shared=True)),
        "compile": lambda: served(["--compile"], compiled_decode),
    }
    report = {name: run() for name, run in runs.items() if name in parts}
    if args.peer and "peer" in parts:
        if args.peer_no_eos:
            EXTRA["logit_bias"] = {i: -100 for i in args.peer_no_eos.split(",")}
        model = httpx.get(args.peer + "/v1/models").json()["data"][0]["id"]
        report["peer"] = {"url": args.peer, "curve": load_curve(args.peer, model)}
        report["peer_shared"] = load_curve(args.peer, model, shared=True)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
