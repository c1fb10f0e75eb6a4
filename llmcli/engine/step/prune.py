"""Which kept compiled steps no run on this machine can load again, for `llmcli models prune`: a library built
by another torch or transformers (the traced forward is theirs), for another CPU (its kernels use what that CPU
has), in an older format, or from a model directory that is gone; a folder whose manifest does not read; and
what a killed build left behind (a hidden scratch or staging folder untouched for a day). Reads manifests and
version strings only: no torch. May import engine.step.store, engine.load.environment and errors.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

LEFT_BEHIND_AFTER_S = 24 * 3600  # a build's scratch folder older than this belongs to no running build


@dataclass(frozen=True)
class Stale:
    """One kept step's folder, why no run can load it, and its bytes."""

    path: Path
    why: str
    bytes: int


def stale_steps(*, everything: bool = False) -> list[Stale]:
    """The kept steps no run here can load again (`everything`: every kept step, each with its reason or
    "kept")."""
    from llmcli.engine.step.store import dir_bytes, manifests, steps_dir

    root = steps_dir()
    if not root.is_dir():
        return []
    read = dict(manifests())
    now = _current()
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            old = time.time() - folder.stat().st_mtime > LEFT_BEHIND_AFTER_S
            why = "left behind by a build that did not finish" if old else None
        elif folder not in read:
            why = "its manifest is missing or unreadable"
        else:
            why = _why_stale(read[folder], now)
        if why or (everything and not folder.name.startswith(".")):
            found.append(Stale(folder, why or "kept", dir_bytes(folder)))
    return found


def remove(stale: list[Stale]) -> int:
    """Deletes the folders; returns the bytes freed. A folder that will not go is an error naming it (exit 1),
    after the others have gone."""
    from llmcli.errors import LlmcliError

    freed, failed = 0, []
    for entry in stale:
        shutil.rmtree(entry.path, ignore_errors=True)
        if entry.path.exists():
            failed.append(entry.path)
        else:
            freed += entry.bytes
    if failed:
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        raise LlmcliError(f"{failed[0]}: could not be removed{more} (freed {freed} bytes of the others)")
    return freed


def _current() -> dict[str, Any]:
    from llmcli.engine.load.environment import cpu
    from llmcli.engine.step.store import FORMAT, cpu_text

    return {"format": FORMAT, "cpu": cpu_text(cpu()), "torch": _version("torch"),
            "transformers": _version("transformers")}  # fmt: skip


def _why_stale(manifest: dict[str, Any], now: dict[str, Any]) -> str | None:
    key = manifest["key"]
    if key.get("format") != now["format"]:
        return "an older format of llmcli's"
    for name in ("torch", "transformers"):
        if key.get(name) != now[name]:
            return f"built with {name} {key.get(name)} (this is {now[name]})"
    if key.get("cpu") != now["cpu"]:
        return f"built for another CPU ({str(key.get('cpu')).split('|')[0]})"
    source = manifest.get("source")
    if isinstance(source, str) and not Path(source).exists():
        return f"its model directory {source} is gone"
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
