"""Tokens scored per second: `score --window`, `score --save-ref`, `compare` (live and from a reference),
next to two plain `score` runs (base, then candidate). The default model in float32 against itself in
bfloat16, on the project's README and docs; models load once, before the clock starts.

    python benchmarks/compare_speed.py [--tokens 2048] [--window 512] [--candidate-dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--candidate-dtype", default="bfloat16")
    args = ap.parse_args()

    import torch

    from llmcli.analysis.compare import Side, compare_record
    from llmcli.analysis.perplexity import score_any
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.reference import read_reference
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Dtype, LoadSpec

    base = load(resolve_model(None), LoadSpec(dtype=Dtype.float32, device="cpu"))
    cand = load(resolve_model(None), LoadSpec(dtype=Dtype(args.candidate_dtype), device="cpu"))
    corpus = "\n\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    ids = base.tokenizer(corpus)["input_ids"][: args.tokens]
    text = base.tokenizer.decode(ids)
    window = {"window": args.window, "stride": args.window // 2}
    score_base, t_base = timed(lambda: score_any(base, text, **window))
    _, t_cand = timed(lambda: score_any(cand, text, **window))
    with tempfile.TemporaryDirectory() as folder:
        ref_path = Path(folder) / "base.ref"
        saved, t_save = timed(lambda: score_any(base, text, save_ref=ref_path, **window))
        live, t_live = timed(lambda: compare_record(Side(base), Side(cand), text, **window))
        ref = read_reference(ref_path)
        far, t_ref = timed(lambda: compare_record(None, Side(cand), text, ref=ref, ref_path=ref_path))
    n = score_base["scored_tokens"]
    figures = {
        "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": "SmolLM2-135M-Instruct float32 (base) vs " + args.candidate_dtype,
        "scored_tokens": n,
        **window,
        "tokens_per_second": {
            "score_window_base": round(n / t_base, 1),
            "score_window_candidate": round(n / t_cand, 1),
            "two_plain_scores": round(n / (t_base + t_cand), 1),
            "score_save_ref_k64": round(n / t_save, 1),
            "compare_live": round(n / t_live, 1),
            "compare_from_reference": round(n / t_ref, 1),
        },
        "kl_mean_live": live["kl"]["mean"],
        "kl_mean_from_reference": far["kl"]["mean"],
        "reference_bytes_per_token": saved["reference"]["bytes_per_token"],
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
