"""replay as a report: identical, or where the tokens part and why they may have (pure)."""

from __future__ import annotations

from typing import Any

from llmcli.output import KV, Para, Section
from llmcli.reports import Report


def _flat(env: dict[str, Any]) -> dict[str, Any]:
    """The parts of a replay block that can change a generation's numbers, as comparable values."""
    device = env.get("device") or {}
    cpu, gpu = device.get("cpu") or {}, device.get("gpu") or {}
    flat = {f"version of {k}": v for k, v in (env.get("versions") or {}).items()}
    flat |= {"python": env.get("python"), "device": device.get("name"), "CPU": cpu.get("model"),
             "CPU flags": ",".join(cpu.get("flags") or []), "GPU": gpu.get("name"),
             "GPU capability": gpu.get("capability"), "CUDA": gpu.get("cuda"), "dtype": env.get("dtype"),
             "attention": env.get("attn_implementation"), "quantize": env.get("quantize"),
             "threads": env.get("threads")}  # fmt: skip
    return flat


def environment_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[dict[str, Any]]:
    """What differs between the record's environment and this rerun's, the batch included (a rerun is alone)."""
    before, after = _flat(recorded), _flat(now)
    out = [{"what": k, "recorded": before.get(k), "now": after.get(k)} for k in sorted(set(before) | set(after))
           if before.get(k) != after.get(k)]  # fmt: skip
    batch = recorded.get("batch") or {}
    if (batch.get("size") or 1) > 1:
        out.append({"what": "batch", "recorded": f"row {batch.get('position', 0)} of {batch['size']}", "now": "alone"})
    elif (batch.get("rows") or 1) > 1:
        out.append({"what": "batch", "recorded": f"one of {batch['rows']} rows (llmcli serve)", "now": "alone"})
    return out


def describe(data: dict[str, Any]) -> str:
    """One line: identical, or the divergence and its likely cause."""
    if data["identical"]:
        return f"identical ({data['tokens']} tokens)"
    old, new = data["recorded_token"], data["new_token"]
    shown = [f"{side} {t['token']!r} (P={t['prob']:.4f})" if t else f"{side}: the output had ended"
             for side, t in (("recorded", old), ("now", new))]  # fmt: skip
    line = f"differs at output token {data['first_divergence']}: " + " vs ".join(shown)
    if data["margin"] is not None:
        line += f"; margin {data['margin']:+.4f} nats" + (" (a near-tie)" if data["near_tie"] else "")
    return line


def replay(data: dict[str, Any]) -> Report:
    blocks: list[Any] = [Para(describe(data), "ok" if data["identical"] else "warn")]
    diffs = data["environment_differences"]
    if diffs:
        blocks.append(Para("what differs from the record's environment", "head"))
        blocks.append(KV([(d["what"], f"{d['recorded']} → {d['now']}", "") for d in diffs]))
    elif not data["identical"]:
        blocks.append(Para("the environment is the same as recorded: a kernel chose another path", "dim"))
    return Report(data, [Section(f"Replay of {data['record']}", blocks)])
