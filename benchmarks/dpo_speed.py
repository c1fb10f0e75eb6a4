"""`llmcli dpo`'s passes against two plain `score` passes over the same tokens (the issue's target: <= 1.1x).

    .venv/bin/python benchmarks/dpo_speed.py PAIRS.jsonl --adapter LORA [--repeat 8]

One process, the default model loaded once (float32, CPU), the policy its base + the LoRA adapter and the
reference the base with the adapter off: dpo's batched passes (analysis.dpo.score_pairs) are timed against, for
every prompt + completion sequence, score's own one-pass window (analysis.perplexity.window_logprobs) under each
model. Prints one JSON object; the figures in docs/dpo.md come from it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", type=Path)
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=8, help="the file's pairs, this many times over")
    args = parser.parse_args()
    import torch

    from llmcli.analysis.dpo import Model, score_pairs
    from llmcli.analysis.pair_tokens import tokenize_pairs
    from llmcli.analysis.pairs import read_pairs
    from llmcli.analysis.perplexity import window_logprobs
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Dtype, LoadSpec
    from llmcli.scoring import Window

    pairs, _ = read_pairs(args.pairs)
    loaded = load(resolve_model(None), LoadSpec(dtype=Dtype.float32, adapter=args.adapter, prefill_only=True))
    tokenized, _ = tokenize_pairs(loaded.tokenizer, pairs * args.repeat, context=None, skip_bad=False)
    policy, reference = Model(loaded), Model(loaded, adapter_off=True)
    options = {"beta": 0.1, "loss": "sigmoid", "decode": loaded.tokenizer.decode}
    list(score_pairs(policy, reference, tokenized[:2], **options))  # warm-up
    started = time.perf_counter()
    list(score_pairs(policy, reference, tokenized, **options))
    dpo_seconds = time.perf_counter() - started
    sequences = [p.prompt + p.completion(side) for p in tokenized for side in ("chosen", "rejected")]
    started = time.perf_counter()
    for ids in sequences:
        window = Window(begin=0, end=len(ids), first=1)
        for off in (False, True):
            window_logprobs(loaded.model, ids, window, adapter_off=off)
    score_seconds = time.perf_counter() - started
    print(json.dumps({
        "pairs": len(tokenized), "tokens": sum(len(s) for s in sequences), "dpo_seconds": round(dpo_seconds, 3),
        "two_score_passes_seconds": round(score_seconds, 3), "ratio": round(dpo_seconds / score_seconds, 3),
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
