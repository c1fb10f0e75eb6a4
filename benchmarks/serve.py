"""llmcli serve against vLLM's CPU build on the default model, each server started in turn in one run: the
figures in docs/performance.md.

Loads (chat completions of 128 tokens, `ignore_eos` so that every engine does the same work; one shared HTTP
connection pool, as the openai client and load generators use): 1, 4, 8, 16 and 32 clients greedy, and the
same counts sampling at temperature 0.7, top_p 0.95, each with its own seed (`--loads` picks some). The
aggregate is completion tokens per second over the wall time of the whole load. Servers: `llmcli serve`
with no flags, with `--dtype bfloat16`, with `--dtype bfloat16 --no-compile` (part 'bfloat16_plain': lone
rows on the model's forward, not a kept compiled step), with `--batch-invariant`, with `--no-prepack` (part
'unpacked': torch's own CPU matrix products), with `--quantize int4` (part 'int4'; 'int4_plain' adds
`--no-compile`), and vLLM (float32, and bfloat16 as part vllm_bfloat16; skipped
without .venv-vllm). For one lone request, where its time goes: the server's own decode time against the
client's wall time. Also: (a) a one-shot `llmcli generate` against the same call with --server; (d) warm
decode with --compile.
Run: .venv/bin/python benchmarks/serve.py [--parts llmcli,float32,bfloat16,invariant,vllm,vllm_bfloat16] > result.json
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
EXTRA: dict = {}  # more request fields for every request
ONLY: list[str] = []  # --loads: these loads only


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


# issue 38's matrix: 1, 4, 16 and 32 clients, greedy and sampling (8 of each: the earlier tables' loads)
LOADS = [(f"{n} {kind}", n, kind == "sampling") for kind in ("greedy", "sampling") for n in (1, 4, 8, 16, 32)]


def ask(http: httpx.Client, url: str, model: str, prompt: str, seed: int | None, tokens: int = 128) -> int:
    """One chat completion; the completion tokens the server reports."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "ignore_eos": True, **EXTRA}  # fmt: skip
    body.update({"temperature": 0.7, "top_p": 0.95, "seed": seed} if seed is not None else {"temperature": 0})
    response = http.post(url + "/v1/chat/completions", json=body, timeout=900)
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


def load(url: str, model: str, clients: int, sampling: bool) -> dict:
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else " Answer briefly.") for i in range(clients)]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(limits=limits) as http:
        with ThreadPoolExecutor(clients) as pool:  # open the connections before the clock starts
            list(pool.map(lambda _i: http.get(url + "/v1/models"), range(clients)))
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            seeds = [100 + i if sampling else None for i in range(clients)]
            tokens = sum(pool.map(lambda ps: ask(http, url, model, *ps), zip(prompts, seeds, strict=True)))
        seconds = time.perf_counter() - started
    return {"clients": clients, "sampling": sampling, "seconds": round(seconds, 2), "tokens": tokens,
            "aggregate_tok_s": round(tokens / seconds, 1)}  # fmt: skip


def loads(url: str, model: str, reps: int) -> dict:
    with httpx.Client() as http:
        ask(http, url, model, PROMPTS[0], None, 16)  # warm-up
    out = {}
    for name, clients, sampling in LOADS:
        if ONLY and name not in ONLY:
            continue
        runs = [load(url, model, clients, sampling) for _ in range(reps)]
        out[name] = max(runs, key=lambda r: r["aggregate_tok_s"])  # the best of the reps: noise only slows
    return out


def where_time_goes(url: str) -> dict:
    """A lone request of 128 tokens on llmcli's endpoint: the client's wall time against the server's own."""
    body = {"prompts": [PROMPTS[0]], "flags": {"do_sample": False, "max_new_tokens": 128, "min_new_tokens": 128}}
    httpx.post(url + "/llmcli/v1/generate", json=body, timeout=900).raise_for_status()
    started = time.perf_counter()
    response = httpx.post(url + "/llmcli/v1/generate", json=body, timeout=900)
    wall_seconds = time.perf_counter() - started
    stats = json.loads(response.text.splitlines()[0])["stats"]
    return {"client_wall_seconds": round(wall_seconds, 3), "server_total_seconds": stats["total_seconds"],
            "time_to_first_token": stats["time_to_first_token"],
            "decode_tok_s": stats["decode_tokens_per_second"],
            "outside_the_engine_seconds": round(wall_seconds - stats["total_seconds"], 3)}  # fmt: skip


def vllm(work, dtype: str = "float32") -> dict:
    """vLLM's CPU build on the converted default model (float32 unless `dtype`), as tests/client/test_vllm.py
    starts it."""
    import os
    import socket

    python = os.environ.get("LLMCLI_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not Path(python).exists():
        return {"skipped": "no vLLM venv (bash scripts/setup-vllm.sh)"}
    model = subprocess.run([sys.executable, "-c", "from llmcli.modelfs.default_model import "
                            "default_gguf, ensure_converted; print(ensure_converted(default_gguf()))"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "default",
            "--dtype", dtype, "--max-model-len", "2048", "--port", str(port)]  # fmt: skip
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(900):
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                return {"skipped": "vLLM exited while starting"}
            time.sleep(1)
        return work(url)
    finally:
        proc.terminate()
        proc.wait(timeout=120)


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


def peer(url: str, no_eos: str | None, reps: int) -> dict:
    if no_eos:
        EXTRA["logit_bias"] = {i: -100 for i in no_eos.split(",")}
    model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    return {"url": url, **loads(url, model, reps)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--parts", default="llmcli,bfloat16,invariant,vllm")
    parser.add_argument("--peer", help="URL of another OpenAI-compatible server already running (part 'peer')")
    parser.add_argument(
        "--peer-no-eos", help="end-of-text ids the peer must not sample (a logit_bias of -100), e.g. 0,2 for "
        "SmolLM2, for a peer that ignores vLLM's ignore_eos (llama-cpp-python's server)"
    )  # fmt: skip
    parser.add_argument("--loads", help="a comma-separated subset of the loads, e.g. '1 greedy,8 greedy'")
    args = parser.parse_args()
    ONLY.extend(args.loads.split(",") if args.loads else [])
    parts = args.parts.split(",")
    runs = {
        "llmcli": lambda: served([], lambda url: {**loads(url, "default", args.reps), "lone": where_time_goes(url)}),
        "bfloat16": lambda: served(["--dtype", "bfloat16"], lambda url: loads(url, "default", args.reps)),
        "bfloat16_plain": lambda: served(
            ["--dtype", "bfloat16", "--no-compile"], lambda url: loads(url, "default", args.reps)
        ),
        "float32": lambda: served(["--dtype", "float32"], lambda url: loads(url, "default", args.reps)),
        "int4": lambda: served(["--quantize", "int4"], lambda url: loads(url, "default", args.reps)),
        "int4_plain": lambda: served(
            ["--quantize", "int4", "--no-compile"], lambda url: loads(url, "default", args.reps)
        ),
        "invariant": lambda: served(["--batch-invariant"], lambda url: loads(url, "default", args.reps)),
        "unpacked": lambda: served(["--no-prepack"], lambda url: loads(url, "default", args.reps)),
        "vllm": lambda: vllm(lambda url: loads(url, "default", args.reps)),
        "vllm_bfloat16": lambda: vllm(lambda url: loads(url, "default", args.reps), dtype="bfloat16"),
        "one_shot": lambda: served([], lambda url: one_shot(url, args.reps)),
        "compile": lambda: served(["--compile"], compiled_decode),
        "peer": lambda: peer(args.peer, args.peer_no_eos, args.reps),
    }
    report = {}
    for name in parts:
        report[name] = runs[name]()
        print(name, json.dumps(report[name]), file=sys.stderr, flush=True)
    for ours, theirs in (("llmcli", "vllm"), ("float32", "vllm"), ("bfloat16", "vllm_bfloat16")):
        if ours in report and theirs in report and "skipped" not in report[theirs]:
            report[f"{ours}_over_{theirs}"] = {
                load: round(report[ours][load]["aggregate_tok_s"] / report[theirs][load]["aggregate_tok_s"], 2)
                for load, _c, _s in LOADS
                if load in report[theirs] and load in report[ours]
            }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
