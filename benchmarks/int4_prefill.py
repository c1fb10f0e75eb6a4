"""Many rows through an int4 layer (prefill; issue 38, item 4): torch's int4 kernel against llmcli's dequantized
bfloat16 tiles (engine/quant/int4_tiles.py) and a bfloat16 `F.linear` of the same weight, on a 7B model's four
layer shapes, from 16 to 512 rows; where the tiles start to win is what int4_tiles.MANY_ROWS is set from.

    python benchmarks/int4_prefill.py --out docs/measurements/int4-prefill-DATE.json

Each figure is the best of five after one warm-up, in milliseconds, on this process's threads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from int4_products import best

SHAPES = {"q/o 3584x3584": (3584, 3584), "k/v 512x3584": (512, 3584), "up 18944x3584": (18944, 3584),
          "down 3584x18944": (3584, 18944)}  # fmt: skip
ROWS = (16, 64, 128, 192, 256, 512)


def measure(shape: tuple[int, int]) -> dict:
    import torch

    from llmcli.engine.quant import int4_tiles
    from llmcli.engine.quant.schemes import SCHEMES

    weight = torch.randn(*shape) * 0.02
    layer = SCHEMES["int4"].layer(SCHEMES["int4"].quantize(weight, 32), None, device="cpu")
    dense = weight.to(torch.bfloat16)
    rows_ms = {}
    for rows in ROWS:
        x = torch.randn(rows, shape[1], dtype=torch.bfloat16)
        kernel = best(lambda x=x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, layer.packed, 32,
                                                                              layer.scales_and_zeros), 5)  # fmt: skip
        tiles = best(lambda x=x: int4_tiles.product(x, layer.packed, layer.scales_and_zeros, layer.tiles), 5)
        bf16 = best(lambda x=x: torch.nn.functional.linear(x, dense), 5)
        rows_ms[rows] = {"int4 kernel": round(kernel * 1e3, 2), "int4 tiles": round(tiles * 1e3, 2),
                         "bfloat16": round(bf16 * 1e3, 2)}  # fmt: skip
        print(shape, rows, rows_ms[rows], flush=True)
    return rows_ms


def main() -> int:
    import torch
    from quant import cpu

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from llmcli.engine.quant import cpu_packing, int4_tiles

    record = {"cpu": {**cpu(), "threads": torch.get_num_threads(), "kernel": torch.backends.cpu.get_cpu_capability()},
              "torch": torch.__version__, "layout": str(cpu_packing.layout()), "many_rows": int4_tiles.MANY_ROWS,
              "compile_from": int4_tiles.COMPILE_FROM,
              "ms": {}}  # fmt: skip
    with torch.no_grad():
        for name, shape in SHAPES.items():
            record["ms"][name] = measure(shape)
    record["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
