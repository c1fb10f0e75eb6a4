"""bench as a report: one row per prompt length × generated length × batch, llmcli beside raw generate()."""

from __future__ import annotations

from typing import Any

from llmcli.output import Para, Section, Table
from llmcli.reports import Report
from llmcli.units import human_bytes


def build(report: dict[str, Any], *, compare_raw: bool) -> Report:
    return Report(report, _sections(report, compare_raw))


def _fmt(entry, digits: int = 1) -> str:
    if entry is None:
        return "n/a"
    if isinstance(entry, dict):
        return f"{entry['median']:.{digits}f} ({entry['min']:.{digits}f}–{entry['max']:.{digits}f})"
    return f"{entry:.{digits}f}"


def _sections(report, compare_raw: bool):
    columns = ["prompt", "gen", "batch", "TTFT ms", "prefill tok/s", "decode tok/s", "throughput tok/s", "peak mem"]
    if compare_raw:
        columns += ["raw decode tok/s", "decode ×", "throughput ×"]
    rows = []
    for r in report["results"]:
        ours = r["llmcli"]
        ttft = {k: v * 1000 for k, v in ours["time_to_first_token"].items()}
        row = [
            str(r["prompt_tokens"]),
            str(r["generated_tokens"]),
            str(r["batch"]),
            _fmt(ttft, 0),
            _fmt(ours["prefill_tokens_per_second"]),
            _fmt(ours["decode_tokens_per_second"]),
            _fmt(ours["throughput_tokens_per_second"]),
            human_bytes(r["peak_memory_bytes"]),
        ]
        if compare_raw:
            row += [
                _fmt(r["raw"]["decode_tokens_per_second"]),
                _fmt(r["ratio"]["decode_tokens_per_second"], 3),
                _fmt(r["ratio"]["throughput_tokens_per_second"], 3),
            ]
        rows.append(row)
    m = report["model"]
    load = report["load_seconds"]
    load_text = f"load {load['llmcli']:.2f} s" + (
        f" (raw {load['raw']:.2f} s, ×{load['ratio']:.3f})" if "raw" in load else ""
    )
    extras = [m["attn_implementation"] or "", "compiled" if report["settings"]["compile"] else ""]
    details = ", ".join([m["dtype"], m["device"], f"{report['settings']['threads']} threads", *filter(None, extras)])
    title = f"bench: {m['source']} ({details})"
    return [
        Section(
            title,
            [
                Table(columns, rows, numeric=set(range(len(columns)))),
                Para(load_text + f"; median (min–max) of {report['settings']['reps']} runs", "dim"),
            ],
        )
    ]
