"""Build a model directory with random weights from a config.json, for benchmarks that must not download.

    python benchmarks/random_model.py CONFIG_DIR TOKENIZER_DIR OUT_DIR [--device cuda] [--layers N]

Weights are drawn on the device (normal, std = the config's initializer_range), saved as bf16 safetensors,
with the tokenizer files copied beside them. Random weights, not zeros: zeros make matrix products faster
than real data. Also prints the device's copy bandwidth (bytes read + written per second), the ceiling the
decode figures are compared with.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def copy_bandwidth(torch, device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    src = torch.empty(2 * 1024**3, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    times.sort()
    return 2 * src.numel() / times[len(times) // 2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir", type=Path)
    ap.add_argument("tokenizer_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=None, help="fewer layers, for a dry run")
    ap.add_argument("--vocab", type=int, default=None, help="another vocabulary size (the tokenizer's own)")
    args = ap.parse_args()

    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(args.config_dir))
    if args.layers:
        config.num_hidden_layers = args.layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[: args.layers]
        if getattr(config, "max_window_layers", None):
            config.max_window_layers = min(config.max_window_layers, args.layers)
    if args.vocab:
        config.vocab_size = args.vocab
    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(args.device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    built = time.perf_counter() - started
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model.save_pretrained(str(args.out_dir), max_shard_size="4GB")
    saved = time.perf_counter() - started
    for name in TOKENIZER_FILES:
        if (args.tokenizer_dir / name).exists():
            shutil.copy(args.tokenizer_dir / name, args.out_dir / name)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    report = {
        "out_dir": str(args.out_dir),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weight_bytes": weight_bytes,
        "build_seconds": round(built, 2),
        "save_seconds": round(saved, 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
    }
    del model
    bandwidth = copy_bandwidth(torch, args.device)
    if bandwidth:
        report["copy_bandwidth_bytes_per_second"] = bandwidth
        report["decode_ceiling_tokens_per_second"] = bandwidth / weight_bytes
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
