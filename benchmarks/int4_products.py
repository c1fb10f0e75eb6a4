"""The products a decoding step is made of, on this CPU, as effective GB/s of weights against the machine's
own memory bandwidth measured in the same run (issue 38, item 3): bfloat16 and float32 `F.linear`, torch's
int4 weight-only kernel (llmcli's int4 layer) and llmcli's int8 layer (two int4 halves), at 1, 4 and 16 rows,
on a 7B model's MLP shape (Qwen2.5-7B: 18,944 x 3,584 up-projection, 3,584 x 18,944 down-projection).

    python benchmarks/int4_products.py --out docs/measurements/int4-products-DATE.json

Bandwidth: a copy (read + write) and a triad (a = b + s * c: two reads, one write) of 512 MiB float32
tensors, the best of five; a product's GB/s counts the bytes of its weight as held (codes, scales and zeros).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SHAPES = {"up 18944x3584": (18944, 3584), "down 3584x18944": (3584, 18944)}
ROWS = (1, 4, 16)


def best(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bandwidth() -> dict:
    import torch

    n = 128 * 1024 * 1024  # 512 MiB of float32
    a, b, c = torch.empty(n), torch.rand(n), torch.rand(n)
    copy = best(lambda: a.copy_(b), 5)
    triad = best(lambda: torch.add(b, c, alpha=0.5, out=a), 5)
    return {"copy_GBps": round(2 * 4 * n / copy / 1e9, 1), "triad_GBps": round(3 * 4 * n / triad / 1e9, 1)}


def layers(shape: tuple[int, int]) -> dict:
    import torch

    from llmcli.engine.quant.layers import held_bytes
    from llmcli.engine.quant.schemes import SCHEMES

    weight = torch.randn(*shape) * 0.02
    made = {}
    for dtype in ("bfloat16", "float32"):
        w = weight.to(getattr(torch, dtype))
        made[dtype] = (lambda x, w=w: torch.nn.functional.linear(x, w), w.numel() * w.element_size(), dtype)
    for scheme in ("int4", "int8"):
        layer = SCHEMES[scheme].layer(SCHEMES[scheme].quantize(weight, 32), None, device="cpu")
        made[f"{scheme} g32 (llmcli)"] = (layer, held_bytes(layer), "bfloat16")
    return made


def main() -> int:
    import platform

    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "")
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
    record = {"cpu": {"model": model, "flags": [f for f in wanted if f in flags], "machine": platform.machine(),
                      "threads": torch.get_num_threads()},
              "torch": torch.__version__, "memory": bandwidth(), "products": {}}  # fmt: skip
    print("memory", record["memory"])
    with torch.no_grad():
        for shape_name, shape in SHAPES.items():
            for name, (fn, nbytes, dtype) in layers(shape).items():
                for rows in ROWS:
                    x = torch.randn(rows, shape[1], dtype=getattr(torch, dtype))
                    seconds = best(lambda fn=fn, x=x: fn(x))
                    row = {"ms": round(1e3 * seconds, 3), "weight_MB": round(nbytes / 1e6, 1),
                           "GBps": round(nbytes / seconds / 1e9, 1)}  # fmt: skip
                    record["products"][f"{shape_name} | {name} | rows {rows}"] = row
                    print(shape_name, name, rows, row, flush=True)
    record["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
