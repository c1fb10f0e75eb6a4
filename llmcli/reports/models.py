"""models as a report: the embedded default model and llmcli's cache of converted GGUF files."""

from __future__ import annotations

from typing import Any

from llmcli.modelfs.default_model import DEFAULT_DIST
from llmcli.output import KV, Para, Section, Table
from llmcli.reports import Report
from llmcli.units import human_bytes


def build(data: dict[str, Any]) -> Report:
    """`data`: cache_home, the default model's record (or its error) and the cached directories."""
    default, cached = data["default"], data["cached"]
    rows = [("cache home", data["cache_home"], "$LLMCLI_HOME, else $XDG_CACHE_HOME/llmcli")]
    if "error" in default:
        rows.append(("default model", "not installed", default["install"]))
    else:
        rows += [
            ("default model", "SmolLM2-135M-Instruct (Q4_1 GGUF)", f"package {DEFAULT_DIST}"),
            ("GGUF file", default["gguf"], human_bytes(default["gguf_bytes"])),
            ("converted", default["cache"] if default["converted"] else "not yet (first generate converts it)", ""),
        ]
    table = Table(
        ["cached model", "size", "state"],
        [[c["path"], human_bytes(c["bytes"]), "ready" if c["complete"] else "incomplete"] for c in cached],
        numeric={1},
    )
    blocks = [KV(rows)] + ([table] if cached else [Para("cache is empty", "dim")])
    steps = data.get("compiled_steps") or []
    if steps:  # generate --compile's libraries (engine.step), used by later runs of the same model and dtype
        rows_ = [[s["path"], s.get("model") or "?", " + ".join(filter(None, (s["dtype"], s.get("scheme")))),
                  s.get("weights", "bound"), s.get("rows", "one"),
                  human_bytes(s["bytes"]), f"{s['build_seconds']} s", s["torch"]] for s in steps]  # fmt: skip
        heads = ["compiled decoding step", "model", "dtype", "weights", "rows", "size", "built in", "torch"]
        blocks.append(Table(heads, rows_, numeric={4, 5}))
    measured = data.get("kernel_measurements") or []
    if measured:  # engine.load.dtype_probe: the CPU's decoding dtype and product, measured once and kept
        blocks.append(Table(["CPU's product measured", "shape", "rows", "chosen", "ms per product", "torch", "when"],
                            [_measurement(m) for m in measured], numeric={2}))  # fmt: skip
    return Report(data, [Section("Models", blocks)])


def _measurement(m: dict[str, Any]) -> list[str]:
    chosen = m["dtype"] if m["product"] == "plain" else f"{m['dtype']}+{m['product']}"
    ms = ", ".join(f"{name} {value}" for name, value in sorted(m["ms"].items(), key=lambda item: item[1]))
    shape = "x".join(str(n) for n in m.get("shape") or [])
    return [str(m.get("cpu", "")), shape, str(m.get("rows", "")), chosen, ms, m["torch"], str(m.get("measured", ""))]


def pruned(data: dict[str, Any]) -> Report:
    """`llmcli models prune`: the compiled steps removed (or, `dry_run`, that would be), each with why."""
    steps = data["steps"]
    head = "compiled decoding step" + (" (would go)" if data["dry_run"] else " (removed)")
    rows = [[s["path"], s["why"], human_bytes(s["bytes"])] for s in steps]
    block = Table([head, "why", "size"], rows, numeric={2}) if steps else Para("nothing to remove", "dim")
    return Report(data, [Section("Pruned", [block])])
