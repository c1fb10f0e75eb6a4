"""Quantization quality on a model whose weights sit on no 4-bit grid (benchmarks/offgrid.py), beside llama.cpp's
quantizations of the same float32 weights (docs/quantization.md, issue 39).

    python benchmarks/quant_offgrid.py --dir /tmp/offgrid --out docs/measurements/quant-offgrid-DATE.json \
        [--before-tree DIR]   # an older llmcli checkout: its --quantize int4 as a "before" row

Every row is scored on the same first 2,048 token ids of benchmarks/data/quant-text.txt against its own float
base (llmcli's float32 load; llama.cpp's float32 GGUF): mean and p99 KL, top-1 agreement, and bits a weight of
the linear layers as held (llmcli: codes plus bfloat16 scale and zero a group, int8 as two 4-bit halves;
llama.cpp: each tensor's type in the file). `llmcli quantize --calibrate` reads benchmarks/data/calibration-text.txt
(Python's standard-library docstrings: a text of another kind than the scored one). llama.cpp rows need
llama-cpp-python (a measurement peer, not in CI); each llmcli row is one fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "benchmarks/data/quant-text.txt"
CALIBRATION = ROOT / "benchmarks/data/calibration-text.txt"
TOKENS = 2048
CHILD = """
import sys, torch
from pathlib import Path
from llmcli.engine.load.loader import load
from llmcli.modelfs.source import ModelSource
from llmcli.plan import LoadSpec, Quantize
path, ids_file, out, quantize, group = sys.argv[1:6]
spec = LoadSpec(dtype="float32", quantize=Quantize(quantize), group_size=int(group) if group != "-" else None)
loaded = load(ModelSource(Path(path), path), spec)
with torch.no_grad():
    torch.save(loaded.model(torch.load(ids_file)).logits[0], out)
"""
LLMCLI = [("int4 g32", "model", "int4", "32", 5.0), ("int4 g64", "model", "int4", "64", 4.5),
          ("int8 g32", "model", "int8", "32", 10.0),
          ("saved int4 g32 (llmcli quantize)", "saved-int4", "none", "-", 5.0),
          ("saved int4 g32 (llmcli quantize --calibrate)", "saved-int4-cal", "none", "-", 5.0),
          ("saved int4 g64 (llmcli quantize --calibrate)", "saved-int4-g64-cal", "none", "-", 4.5),
          ("saved int8 g32 (llmcli quantize --calibrate)", "saved-int8-cal", "none", "-", 10.0)]  # fmt: skip
LLAMA = {"Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15, "Q5_K_M": 17}


def kl_stats(base, cand) -> dict:
    import torch

    lp, lq = torch.log_softmax(base.float(), -1), torch.log_softmax(cand.float(), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    return {"kl_mean": kl.mean().item(), "kl_p99": kl.quantile(0.99).item(),
            "top1": (base.argmax(-1) == cand.argmax(-1)).float().mean().item()}  # fmt: skip


def logits_of(path: Path, ids_file: str, quantize: str, group: str, *, tree: str | None = None):
    import torch

    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    with tempfile.NamedTemporaryFile(suffix=".pt") as out:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path), ids_file, out.name, quantize, group],
                              capture_output=True, text=True, env=env, cwd=tree or ROOT)  # fmt: skip
        if proc.returncode:
            raise SystemExit(proc.stderr)
        return torch.load(out.name), time.perf_counter() - started


def saved_copies(base: Path) -> None:
    """The `llmcli quantize` outputs the rows read (made once)."""
    for name, extra in (("saved-int4", ["--to", "int4"]),
                        ("saved-int4-cal", ["--to", "int4", "--calibrate", str(CALIBRATION)]),
                        ("saved-int4-g64-cal", ["--to", "int4", "--group-size", "64", "--calibrate", str(CALIBRATION)]),
                        ("saved-int8-cal", ["--to", "int8", "--calibrate", str(CALIBRATION)])):  # fmt: skip
        if not (base / name).exists():
            subprocess.run([sys.executable, "-m", "llmcli", "quantize", str(base / "model"), str(base / name), *extra],
                           check=True, cwd=ROOT)  # fmt: skip


def llama_rows(base: Path, ids: list[int]) -> dict:
    import gguf
    import numpy as np
    import torch
    from llama_cpp import Llama
    from quant import quantize_gguf

    def logits(path: str):
        llm = Llama(model_path=path, n_ctx=TOKENS, n_batch=512, logits_all=True, verbose=False, n_threads=2)
        llm.eval(ids)
        return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))

    def bits(path: str) -> float:
        tensors = [t for t in gguf.GGUFReader(path).tensors if t.name.startswith("blk.") and len(t.shape) == 2]
        return 8 * sum(int(t.n_bytes) for t in tensors) / sum(int(t.n_elements) for t in tensors)

    source = str(base / "offgrid-f32.gguf")
    float_logits, rows = logits(source), {}
    for name, ftype in LLAMA.items():
        path = source.replace(".gguf", f".{name}.gguf")
        quantize_gguf(source, path, ftype)
        rows[f"llama.cpp {name}"] = kl_stats(float_logits, logits(path)) | {"bits_per_weight": round(bits(path), 3)}
        print(name, rows[f"llama.cpp {name}"], file=sys.stderr)
    return rows


def main() -> int:
    import torch
    from quant import cpu
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, required=True, help="benchmarks/offgrid.py's output (made if missing)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--before-tree", help="an older llmcli source tree for a 'before' row")
    args = ap.parse_args()
    if not (args.dir / "model").exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks/offgrid.py"), str(args.dir)], check=True)
    saved_copies(args.dir)
    ids = AutoTokenizer.from_pretrained(str(args.dir / "model"))(TEXT.read_text()).input_ids[:TOKENS]
    rows: dict = {}
    with tempfile.NamedTemporaryFile(suffix=".pt") as ids_file:
        torch.save(torch.tensor([ids]), ids_file.name)
        base, _ = logits_of(args.dir / "model", ids_file.name, "none", "-")
        configs = [(name, args.dir / sub, q, g, b, None) for name, sub, q, g, b in LLMCLI]
        if args.before_tree:
            configs.insert(0, ("int4 g32 before (min/max rounding)", args.dir / "model", "int4", "32", 5.0,
                               args.before_tree))  # fmt: skip
        for name, path, quantize, group, bits, tree in configs:
            logits, seconds = logits_of(path, ids_file.name, quantize, group, tree=tree)
            rows[name] = kl_stats(base, logits) | {"bits_per_weight": bits, "load_and_score_s": round(seconds, 1)}
            print(name, rows[name], file=sys.stderr)
    try:
        rows |= llama_rows(args.dir, ids)
    except ImportError:
        print("llama_cpp is not installed: no llama.cpp rows", file=sys.stderr)
    record = {"cpu": cpu(), "model": json.loads((args.dir / "offgrid.json").read_text()), "tokens": len(ids),
              "rows": rows, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
