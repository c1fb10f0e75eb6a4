"""Summarize benchmarks/cuda.sh's files as the table in docs/performance.md: python benchmarks/cuda_report.py DIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def first_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def main() -> int:
    out = Path(sys.argv[1])
    model = load(out / "model.json") or {}
    ceiling = model.get("decode_ceiling_tokens_per_second")
    print(f"device: {model.get('device_name')}  torch {model.get('torch')}  transformers {model.get('transformers')}")
    if model:
        print(
            f"model: {model['parameters']:,} params, {model['weight_bytes'] / 1e9:.2f} GB bf16; "
            f"built {model['build_seconds']} s, saved {model['save_seconds']} s"
        )
    if ceiling:
        print(
            f"copy bandwidth {model['copy_bandwidth_bytes_per_second'] / 1e12:.2f} TB/s -> decode ceiling "
            f"{ceiling:.1f} tok/s (datasheet 4.8 TB/s -> {4.8e12 / model['weight_bytes']:.1f})"
        )
    for name in ("bench", "bench-compile"):
        report = load(out / f"{name}.json")
        if not report:
            print(f"{name}: no result ({first_line(out / f'{name}.err')})")
            continue
        ld = report["load_seconds"]
        print(
            f"{name}: attn={report['model'].get('attn_implementation')} dtype={report['model']['dtype']} "
            f"load {ld['llmcli']:.2f} s vs raw {ld.get('raw', float('nan')):.2f} s"
        )
        for r in report["results"]:
            ours, raw = r["llmcli"], r.get("raw", {})
            dec = (ours.get("decode_tokens_per_second") or {}).get("median")
            rdec = (raw.get("decode_tokens_per_second") or {}).get("median")
            share = f" = {dec / ceiling:.0%} of ceiling" if (ceiling and dec and r["batch"] == 1) else ""
            ttft_ms = ours["time_to_first_token"]["median"] * 1000
            ratio = r["ratio"]["decode_tokens_per_second"]
            prefill = ours["prefill_tokens_per_second"]
            print(
                f"  batch {r['batch']}: decode {dec:.1f} tok/s{share} (raw {rdec:.1f}, ratio {ratio:.3f}), "
                f"TTFT {ttft_ms:.1f} ms, prefill {prefill:.0f} tok/s, throughput "
                f"{ours['throughput_tokens_per_second']:.1f} tok/s, peak {r['peak_memory_bytes'] / 2**30:.2f} GiB"
            )
    for name in ("generate-auto", "generate-sdpa", "generate-eager", "generate-long-auto", "generate-long-eager"):
        gen = load(out / f"{name}.json")
        if not gen:
            print(f"{name}: no result ({first_line(out / f'{name}.err')})")
            continue
        s = gen["stats"]
        print(
            f"{name} (one-shot): load {s['load_seconds']} s, prompt {s['prompt_tokens']} tokens, TTFT "
            f"{s['time_to_first_token']} s, decode {s['decode_tokens_per_second']} tok/s, attention "
            f"{s.get('attn_implementation')}, peak {s['peak_memory_bytes'] / 2**30:.2f} GiB"
        )
    print(f"--attn flash_attention_2: {first_line(out / 'attn-flash.err') or first_line(out / 'attn-flash.json')}")
    insp = load(out / "inspect.json")
    if insp:
        print(f"inspect: parameters {json.dumps(insp.get('parameters'))[:200]}")
    print((out / "steps.txt").read_text() if (out / "steps.txt").exists() else "no steps.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
