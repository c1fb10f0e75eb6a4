"""The compiled decoding step (engine/step) and oneDNN's reordered weights (engine/load/prepack, the default where
they measure faster) against the plain step, as a user meets them: one-shot `llmcli generate -n 128`
processes, wall time included (load, prefill, the library's load), interleaved so that the
machine's drift hits both alike; beside llama-cpp-python on the default model's own GGUF where a Python with
llama_cpp is named. Issue 38, item 1 (does the step pay for a one-shot generate with a warm cache?) and item 7
(the default model's single stream against llama.cpp's). `--prompt-file` gives llmcli a long prompt instead (the
llama.cpp side keeps its own).

    python benchmarks/compiled_step.py --reps 5 [--llama-python /path/to/venv/bin/python] \\
        --out docs/measurements/compiled-step-DATE.json

Each dtype's library is built first (`--compile`, its time read from the stderr line) unless one is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Tell me a story about a dragon who learns to read."


# each way of decoding one row: its flags and whether the load measures its product (engine.load.dtype_probe)
WAYS = {
    "plain": (["--no-compile"], False),  # torch's F.linear, eager
    "onednn": (["--no-compile"], True),  # oneDNN's reordered weights where they measure faster, eager
    "default": ([], True),  # what a run without flags does: oneDNN for the prefill, the kept library decodes
    "compiled": (["--compile"], True),  # the kept library, the prefill on F.linear (--compile loads unpacked)
}
TIME = Path("/usr/bin/time")  # GNU time: the process's peak RSS


def llmcli(args: list[str], *, probe: bool = True) -> tuple[dict, str, float, int | None]:
    started = time.perf_counter()
    env = dict(os.environ, LLMCLI_DTYPE_PROBE="1" if probe else "0")
    timed = [str(TIME), "-f", "peak_kb=%M"] if TIME.exists() else []
    proc = subprocess.run([*timed, sys.executable, "-m", "llmcli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env)  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"llmcli {' '.join(args)} failed:\n{proc.stderr}")
    peak = re.search(r"peak_kb=(\d+)", proc.stderr)
    return (
        (json.loads(proc.stdout) if "--json" in args else {}),
        proc.stderr,
        wall,
        int(peak.group(1)) if peak else None,
    )


def one_shot(dtype: str, way: str, tokens: int, prompt: str) -> dict:
    args = ["generate", "--dtype", dtype, "-n", str(tokens), "--min-new-tokens", str(tokens), "--greedy", "--json"]
    flags, probe = WAYS[way]
    data, _, wall, peak_kb = llmcli([*args, *flags, prompt], probe=probe)
    stats = data["stats"]
    return {"wall_s": round(wall, 3), "decode_tok_s": stats["decode_tokens_per_second"],
            "peak_mib": (peak_kb or 0) // 1024, "ttft_s": stats["time_to_first_token"],
            "compiled_step": stats["compiled_step"],
            "product": (data["model"].get("dtype_choice") or {}).get("product", "plain"),
            "token_ids": data["outputs"][0]["token_ids"]}  # fmt: skip


def summary(runs: list[dict], field: str) -> dict:
    values = [r[field] for r in runs]
    return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}


def llama_cpp(python: str, tokens: int, reps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [python, str(ROOT / "benchmarks" / "llama_cpp_bench.py"), "--gen-tokens", str(tokens), "--reps", str(reps)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    runs = json.loads(proc.stdout)["runs"]
    return {"decode_tok_s": summary(runs, "decode_tok_s"), "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--llama-python", help="a Python that imports llama_cpp (llama-cpp-python)")
    parser.add_argument("--prompt-file", type=Path, help="llmcli's prompt: this file's first --prompt-chars characters")
    parser.add_argument("--prompt-chars", type=int, default=4500)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    prompt = args.prompt_file.read_text()[: args.prompt_chars] if args.prompt_file else PROMPT
    sys.path.insert(0, str(ROOT))
    from llmcli.engine.load.environment import cpu

    record: dict = {"cpu": cpu(), "tokens": args.tokens, "reps": args.reps, "prompt": prompt[:200], "dtypes": {}}
    if args.llama_python:  # before and after llmcli's runs, so that the machine's drift shows
        record["llama_cpp_before"] = llama_cpp(args.llama_python, args.tokens, args.reps)
        print("llama.cpp before", record["llama_cpp_before"]["decode_tok_s"], file=sys.stderr)
    for dtype in args.dtypes.split(","):
        _, stderr, wall, _ = llmcli(["generate", "--dtype", dtype, "-n", "4", "--greedy", "--compile", PROMPT])
        built = re.search(r"compiled the decoding step in ([\d.]+) s", stderr)
        runs: dict[str, list] = {way: [] for way in WAYS}
        for _ in range(args.reps):
            for way in WAYS:
                runs[way].append(one_shot(dtype, way, args.tokens, prompt))
        same = {way: all(r["token_ids"] == runs["plain"][0]["token_ids"] for r in done) for way, done in runs.items()}
        row = {"build_s": float(built.group(1)) if built else None, "build_run_wall_s": round(wall, 1),
               "same_tokens": same}  # fmt: skip
        for name, done in runs.items():
            row[name] = {field: summary(done, field) for field in ("wall_s", "decode_tok_s", "ttft_s", "peak_mib")}
            row[name]["compiled_step"] = sorted({str(r["compiled_step"]) for r in done})
            row[name]["product"] = sorted({r["product"] for r in done})
        for way in ("onednn", "default", "compiled"):
            plain = row["plain"]
            row[f"{way}_decode_ratio"] = round(row[way]["decode_tok_s"]["median"] / plain["decode_tok_s"]["median"], 3)
            row[f"{way}_wall_saved_s"] = round(plain["wall_s"]["median"] - row[way]["wall_s"]["median"], 3)
        record["dtypes"][dtype] = row
        print(dtype, json.dumps({k: v for k, v in row.items()}), file=sys.stderr)
    if args.llama_python:
        record["llama_cpp"] = llama_cpp(args.llama_python, args.tokens, args.reps)
        print("llama.cpp", record["llama_cpp"]["decode_tok_s"], file=sys.stderr)
    text = json.dumps(record, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
