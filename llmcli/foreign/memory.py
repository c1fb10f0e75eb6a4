"""What an engine was caught ignoring, remembered per server, so that the next call refuses it up front.

One JSON file in llmcli's cache: {server: {"engine": label, "ignores": {field: evidence}}}. An engine whose
label changes at that address (an upgrade, another server) starts with a clean slate.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

FILE = "engines.json"


def memory_file() -> Path:
    from llmcli.modelfs.default_model import cache_home

    return cache_home() / FILE


def _read() -> dict[str, Any]:
    try:
        data = json.loads(memory_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: nothing remembered, and the next finding rewrites it whole
    return data if isinstance(data, dict) else {}


def recall(server: str, engine: Any) -> dict[str, str]:
    entry = _read().get(server)
    if not isinstance(entry, dict) or entry.get("engine") != engine.label:
        return {}
    ignores = entry.get("ignores")
    return {str(k): str(v) for k, v in ignores.items()} if isinstance(ignores, dict) else {}


def remember(server: str, engine: Any, field: str, evidence: str) -> None:
    """Adds `field` to what the engine at `server` ignores (atomically: a temporary file, then a rename)."""
    engine.ignores[field] = evidence
    data = _read()
    entry = data.get(server) if isinstance(data.get(server), dict) else {}
    if entry.get("engine") != engine.label:
        entry = {"engine": engine.label, "ignores": {}}
    entry["ignores"] = {**entry.get("ignores", {}), field: evidence}
    data[server] = entry
    target = memory_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".engines-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, ensure_ascii=False)
        os.replace(temporary, target)
    except OSError:
        pass  # a read-only cache: this call still reports the finding; later calls find it again
