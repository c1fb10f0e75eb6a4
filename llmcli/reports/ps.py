"""ps as a report: what a running server holds (models, memory, idleness) and its queue."""

from __future__ import annotations

from typing import Any

from llmcli.output import Para, Section, Table
from llmcli.reports import Report
from llmcli.units import human_bytes


def _idle(m: dict[str, Any]) -> str:
    keep = m["keep_alive_seconds"]
    return f"{m['idle_seconds']:g} s" + (f" of {keep:g} s" if keep is not None else "")


def _weights(model: dict[str, Any]) -> str:
    if not model["loaded"]:
        return "unloaded"
    packed = model.get("prepacked_bytes") or 0  # older servers do not say
    return human_bytes(model["weights_bytes"]) + (f" + {human_bytes(packed)} prepacked" if packed else "")


def _dtype(model: dict[str, Any]) -> str:
    """The dtype (and 'measured' when a probe chose it, with oneDNN's product where it did), and the scheme of a
    quantized model:
    'float32 + int4 g32 (5.0 bits)'."""
    quant = model.get("quantization")  # older servers do not say
    choice = model.get("dtype_choice")
    dtype = model["dtype"] + (
        "" if not choice else " (measured, oneDNN)" if choice.get("product") == "onednn" else " (measured)"
    )
    if not quant:
        return dtype + (f" + {model['quantize']}" if model.get("quantize") else "")
    group = f" g{quant['group_size']}" if quant.get("group_size") else ""
    return f"{dtype} + {quant['scheme']}{group} ({quant['bits_per_weight']} bits)"


def build(data: dict[str, Any], server: str) -> Report:
    """`data`: the server's /llmcli/v1/ps answer."""
    rows = [
        [
            m["name"],
            _dtype(m),
            m["device"],
            _weights(m),
            _idle(m),
            str(m["loads"]),
        ]
        for m in data["models"]
    ]
    table = Table(["model", "dtype", "device", "weights", "idle", "loads"], rows, numeric={5})
    tools = [f"{m['name']}: tool calls read as {m['tool_parser']}, rendered by {m['tools']}"
             for m in data["models"] if m.get("tool_parser")]  # fmt: skip
    queue = (
        f"{data['in_flight']} of {data['queue_size']} requests in flight; {_batching(data)}; "
        f"up {data['uptime_seconds']:g} s"
    )
    if "failed_requests" in data:  # older servers do not say
        queue += f"; {data['failed_requests']} failed"
    return Report(data, [Section(f"Server {server}", [table, Para(queue), *(Para(line, "dim") for line in tools)])])


def _batching(data: dict) -> str:
    cap = data.get("max_batch")
    bound = f"up to {cap} rows" if cap else "rows bounded by KV memory"
    mode = "batch-invariant" if data.get("batch_invariant") else "continuous batching"
    return f"{data.get('rows_running', 0)} decoding ({mode}, {bound})"
