"""What an engine was caught ignoring, remembered per server, so that the next call refuses it up front.

One JSON file in llmcli's cache (modelfs.memo): {server: {"engine": label, "ignores": {field: evidence}}}. An
engine whose label changes at that address (an upgrade, another server) starts with a clean slate.
"""

from __future__ import annotations

from typing import Any

from llmcli.modelfs.memo import read_memo, write_memo

FILE = "engines.json"


def recall(server: str, engine: Any) -> dict[str, str]:
    entry = read_memo(FILE).get(server)
    if not isinstance(entry, dict) or entry.get("engine") != engine.label:
        return {}
    ignores = entry.get("ignores")
    return {str(k): str(v) for k, v in ignores.items()} if isinstance(ignores, dict) else {}


def remember(server: str, engine: Any, field: str, evidence: str) -> None:
    """Adds `field` to what the engine at `server` ignores."""
    engine.ignores[field] = evidence
    data = read_memo(FILE)
    entry = data.get(server) if isinstance(data.get(server), dict) else {}
    if entry.get("engine") != engine.label:
        entry = {"engine": engine.label, "ignores": {}}
    entry["ignores"] = {**entry.get("ignores", {}), field: evidence}
    data[server] = entry
    write_memo(FILE, data)
