"""Prints the Markdown tables of docs/performance.md from the JSON files benchmarks/run.sh wrote."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def med(entry):
    return entry["median"] if isinstance(entry, dict) else entry


def main(folder: str) -> None:
    out = Path(folder)
    print(
        "| dtype | quantize | batch | TTFT ms | prefill tok/s | decode tok/s (min–max) | throughput tok/s | "
        "raw decode tok/s | llmcli/raw decode | llmcli/raw throughput | load s (raw) | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted(out.glob("bench-*.json")):
        data = json.loads(path.read_text())
        load = data["load_seconds"]
        for row in data["results"]:
            ours, raw = row["llmcli"], row["raw"]
            dec = ours["decode_tokens_per_second"]
            print(
                f"| {data['model']['dtype']} | {data['model'].get('quantize') or 'none'} | {row['batch']} | "
                f"{med(ours['time_to_first_token']) * 1000:.0f} | {ours['prefill_tokens_per_second']:.1f} | "
                f"{dec['median']:.1f} ({dec['min']:.1f}–{dec['max']:.1f}) | "
                f"{ours['throughput_tokens_per_second']:.1f} | {med(raw['decode_tokens_per_second']):.1f} | "
                f"{row['ratio']['decode_tokens_per_second']:.3f} | "
                f"{row['ratio']['throughput_tokens_per_second']:.3f} | "
                f"{load['llmcli']:.2f} ({load['raw']:.2f}) | {row['peak_memory_bytes'] / 2**20:.0f} |"
            )
    startup = out / "startup.json"
    if startup.exists():
        print()
        print("| command | median s (min–max) |")
        print("|---|---|")
        for name, t in json.loads(startup.read_text()).items():
            print(f"| `{name}` | {t['median']:.2f} ({t['min']:.2f}–{t['max']:.2f}) |")
    llama = out / "llama_cpp.json"
    if llama.exists():
        runs = json.loads(llama.read_text())["runs"]
        speeds = sorted(r["decode_tok_s"] for r in runs)
        print(f"\nllama.cpp decode: {speeds[len(speeds) // 2]:.1f} tok/s (median of {len(runs)})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")
