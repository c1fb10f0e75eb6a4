"""How close a reference file's KL is to the exact KL, for K = 16, 64, 256: the default model against a copy
with every weight nudged by Gaussian noise, float32, on a text (default: the project's README and docs).

    python benchmarks/reference_accuracy.py [--text FILE] [--noise 0.01] [--window 512] [--tokens 2048]

Prints one JSON object: exact mean KL both ways, and per K the one-bucket lower bound and the estimate with
tail samples (what llmcli's reference files store), as ratios to exact; bytes per token of each file beside
a full-logit file's (vocabulary × 2 bytes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", type=Path, default=None)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--ks", default="16,64,256")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcli.analysis.compare import tail_divergences
    from llmcli.analysis.perplexity import tail_samples
    from llmcli.modelfs.default_model import default_gguf, ensure_converted
    from llmcli.scoring import plan_windows

    text = (
        args.text.read_text()
        if args.text
        else "\n\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    )
    model_dir = ensure_converted(default_gguf())
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok(text)["input_ids"][: args.tokens]
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    cand = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in cand.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * float(param.std()) * args.noise)
    ks = [int(k) for k in args.ks.split(",")]
    sums = {"exact": 0.0, "exact_reverse": 0.0, "tail_mass": 0.0, **{f"k{k}": 0.0 for k in ks}}
    sums |= {f"k{k}_sampled": 0.0 for k in ks} | {f"k{k}_sampled_reverse": 0.0 for k in ks}
    sums |= {f"k{k}_reverse": 0.0 for k in ks}
    count = 0
    for win in plan_windows(len(ids), args.window, args.window // 2):
        x = torch.tensor([ids[win.begin : win.end]])
        with torch.no_grad():
            rows = slice(win.first - win.begin - 1, win.end - win.begin - 1)
            p = torch.log_softmax(base(x).logits[0, rows].float(), -1).double()
            q = torch.log_softmax(cand(x).logits[0, rows].float(), -1).double()
        sums["exact"] += float((p.exp() * (p - q)).sum())
        sums["exact_reverse"] += float((q.exp() * (q - p)).sum())
        for k in ks:
            top_p, top_ids = torch.topk(p, k, -1)
            top_q = q.gather(1, top_ids)
            tail_p = (1 - top_p.exp().sum(-1)).clamp_min(1e-12)
            tail_q = (1 - top_q.exp().sum(-1)).clamp_min(1e-12)
            bound = (top_p.exp() * (top_p - top_q)).sum(-1) + tail_p * (tail_p.log() - tail_q.log())
            bound_r = (top_q.exp() * (top_q - top_p)).sum(-1) + tail_q * (tail_q.log() - tail_p.log())
            sums[f"k{k}"] += float(bound.sum())
            sums[f"k{k}_reverse"] += float(bound_r.sum())
            if k == 64:
                sums["tail_mass"] += float(tail_p.sum())
            sample_ids, sample_p = tail_samples(p, top_ids, k, generator=gen)
            fwd, rev = tail_divergences(sample_p, q.gather(1, sample_ids), tail_p, tail_q)
            fwd, rev = bound + fwd, bound_r + rev
            sums[f"k{k}_sampled"] += float(fwd.sum())
            sums[f"k{k}_sampled_reverse"] += float(rev.sum())
        count += win.scored
    exact, exact_r = sums["exact"] / count, sums["exact_reverse"] / count
    vocab = base.config.vocab_size
    figures = {"tokens": count, "noise": args.noise, "window": args.window, "exact_kl": exact,
               "exact_kl_reverse": exact_r, "mean_tail_mass_beyond_64": sums["tail_mass"] / count,
               "full_logits_bytes_per_token": vocab * 2}  # fmt: skip
    for k in ks:
        figures[f"k{k}"] = {
            "lower_bound_ratio": sums[f"k{k}"] / count / exact,
            "lower_bound_reverse_ratio": sums[f"k{k}_reverse"] / count / exact_r,
            "with_tail_samples_ratio": sums[f"k{k}_sampled"] / count / exact,
            "with_tail_samples_reverse_ratio": sums[f"k{k}_sampled_reverse"] / count / exact_r,
            "bytes_per_token": 2 * k * (2 + 4) + 4 + 4 + 4,
        }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
