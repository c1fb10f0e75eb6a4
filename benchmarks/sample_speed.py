"""`llmcli sample`'s speed: N completions of 16 prompts on the default model, 128 new tokens each (EOS ignored, so
every engine does the same work), batched on the step scheduler, against the same 16 × N completions generated
one at a time, and against vLLM's CPU build answering the 16 prompts with `n=N`, all 16 requests in flight.

    .venv/bin/python benchmarks/sample_speed.py [--n 8] [--dtype float32] [--parts batched,solo,vllm] > result.json

Figures are completion tokens per second over the wall time of the generation (the model loaded before the clock
starts, in every case); the machine's CPU model and flags are recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import vllm  # noqa: E402 - the benchmark beside this one starts vLLM the same way

TOPICS = ["the sea", "a city at night", "autumn", "a robot", "bread", "the moon", "a library", "rain", "a train",
          "mountains", "coffee", "a cat", "winter", "music", "a garden", "the desert"]  # fmt: skip
PROMPTS = [f"Write a short story about {topic}." for topic in TOPICS]
TOKENS = 128


def cpu() -> dict:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    flags = info.get("Flags", "").split()
    kinds = {name: name in flags for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}
    return {"model": info.get("Model name"), "cores": info.get("CPU(s)"), "machine": platform.machine(), **kinds}


def local(n: int, dtype: str, *, batched: bool, rows_in_flight: int = 256) -> dict:
    from llmcli.analysis import sampling
    from llmcli.engine.generate.generation import generate
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Dtype, GenerationPlan, LoadSpec

    loaded = load(resolve_model(None, verbose=False), LoadSpec(dtype=Dtype(dtype)))
    kwargs = {"do_sample": True, "max_new_tokens": TOKENS, "min_new_tokens": TOKENS}
    plan = GenerationPlan(kwargs=kwargs)
    rows = [sampling.PromptRow(i + 1, p) for i, p in enumerate(PROMPTS)]
    started = time.perf_counter()
    tokens = 0
    if batched:
        window = max(1, rows_in_flight // n)
        for _row, _ids, samples in sampling.generate_groups(loaded, rows, plan, n=n, base_seed=1, window=window):
            tokens += sum(len(s.token_ids) for s in samples)
    else:
        from dataclasses import replace

        for row in rows:
            for seed in sampling.seeds(1, row.line, n):
                ids = sampling.prompt_ids(loaded.tokenizer, row)
                [result] = generate(loaded, [row.prompt], replace(plan, seed=seed), encoded=[ids])
                tokens += len(result.outputs[0].token_ids)
    seconds = time.perf_counter() - started
    return {"completions": n * len(rows), "tokens": tokens, "seconds": round(seconds, 2),
            "tok_s": round(tokens / seconds, 1)}  # fmt: skip


def vllm_n(url: str, n: int) -> dict:
    body = {"model": "default", "max_tokens": TOKENS, "min_tokens": TOKENS, "ignore_eos": True, "temperature": 1.0,
            "n": n}  # fmt: skip
    with httpx.Client(timeout=1800, limits=httpx.Limits(max_connections=32)) as http:
        http.post(
            url + "/v1/completions", json={**body, "prompt": PROMPTS[0], "n": 1, "max_tokens": 8, "min_tokens": 8}
        ).raise_for_status()
        started = time.perf_counter()

        def one(prompt: str) -> int:
            answer = http.post(url + "/v1/completions", json={**body, "prompt": prompt})
            answer.raise_for_status()
            return answer.json()["usage"]["completion_tokens"]

        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            tokens = sum(pool.map(one, PROMPTS))
    seconds = time.perf_counter() - started
    return {"completions": n * len(PROMPTS), "tokens": tokens, "seconds": round(seconds, 2),
            "tok_s": round(tokens / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--parts", default="batched,solo,vllm")
    parser.add_argument("--rows", type=int, default=256, help="completions in flight at once (sample's default)")
    args = parser.parse_args()
    report: dict = {"cpu": cpu(), "n": args.n, "prompts": len(PROMPTS), "new_tokens": TOKENS, "dtype": args.dtype}
    parts = args.parts.split(",")
    if "batched" in parts:
        report["llmcli_sample_batched"] = local(args.n, args.dtype, batched=True, rows_in_flight=args.rows)
        report["rows_in_flight"] = args.rows
    if "solo" in parts:
        report["one_at_a_time"] = local(args.n, args.dtype, batched=False)
    if "vllm" in parts:
        report["vllm_n"] = vllm(lambda url: vllm_n(url, args.n), dtype=args.dtype)
    tok = {k: v.get("tok_s") for k, v in report.items() if isinstance(v, dict) and "tok_s" in v}
    if "llmcli_sample_batched" in tok and "one_at_a_time" in tok:
        report["batched_over_solo"] = round(tok["llmcli_sample_batched"] / tok["one_at_a_time"], 2)
    if "llmcli_sample_batched" in tok and "vllm_n" in tok:
        report["batched_over_vllm"] = round(tok["llmcli_sample_batched"] / tok["vllm_n"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
