"""Small JSON files in llmcli's cache (what an engine was caught ignoring, remote-code digests, GGUF hashes):
read forgivingly (missing or damaged is empty), written whole through a temporary file and a rename, and never
a reason for a command to fail (a read-only cache only means the next run works it out again)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def memo_path(name: str) -> Path:
    from llmcli.modelfs.default_model import cache_home

    return cache_home() / name


def read_memo(name: str) -> dict[str, Any]:
    try:
        data = json.loads(memo_path(name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_memo(name: str, data: dict[str, Any]) -> None:
    target = memo_path(name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, ensure_ascii=False)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        pass


def first_time(name: str, key: str) -> bool:
    """True the first time `key` is asked for in memo `name` (an offer said once), which remembers it then."""
    import time

    made = read_memo(name)
    if key in made:
        return False
    write_memo(name, {**made, key: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return True
