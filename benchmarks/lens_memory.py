"""Peak memory of `llmcli lens` on a Qwen2.5-7B-shaped model (random bf16 weights, built in memory, no files).

    python benchmarks/lens_memory.py [--layers 28] [--positions 128]

Prints one JSON object: the weights' bytes, the captured states' bytes (layers × positions × hidden), what
layers × positions × vocabulary float32 distributions would take, and the peak RSS growth of the lens pass
(every position read, as `--positions all` does). Needs about 16 GiB of RAM at 28 layers.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--positions", type=int, default=128)
    args = ap.parse_args()

    import torch
    import transformers

    from llmcli.analysis.lens import lens_pass

    config = transformers.AutoConfig.from_pretrained(str(ROOT / "tests" / "data" / "qwen2.5-7b"))
    config.num_hidden_layers = args.layers
    config.layer_types = config.layer_types[: args.layers] if getattr(config, "layer_types", None) else None
    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = transformers.Qwen2ForCausalLM._from_config(config, dtype=torch.bfloat16).eval()
    built = time.perf_counter() - started
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    ids = torch.randint(0, config.vocab_size, (args.positions,)).tolist()
    lens_pass(model, ids[:4], [0], track=None, top=5, attention_at=None)  # warm: kernels, allocator
    before = peak_kib()
    started = time.perf_counter()
    found = lens_pass(model, ids, list(range(len(ids))), track=None, top=5, attention_at=None)
    seconds = time.perf_counter() - started
    states = (args.layers + 1) * args.positions * config.hidden_size * 2
    figures = {
        "model": "Qwen2.5-7B shape, random bf16 weights",
        "layers": args.layers,
        "positions": args.positions,
        "vocab": config.vocab_size,
        "weights_bytes": weights,
        "states_bytes": states,
        "layers_positions_vocab_float32_bytes": (args.layers + 1) * args.positions * config.vocab_size * 4,
        "peak_growth_bytes": (peak_kib() - before) * 1024,
        "peak_rss_bytes": peak_kib() * 1024,
        "lens_seconds": round(seconds, 1),
        "build_seconds": round(built, 1),
        "final_check": found.final_check,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
