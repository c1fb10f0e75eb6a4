"""Careful reading of files from a model directory: every byte is treated as hostile."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError

LFS_PREFIX = b"version https://git-lfs"


def sniff(head: bytes) -> str | None:
    """Say what a file really is from its first bytes, when that is recognisable."""
    stripped = head.lstrip()
    if not head:
        return "empty file"
    if head.startswith(LFS_PREFIX):
        return "a Git LFS pointer, not the real file (run `git lfs pull` in the model directory)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch .bin/pickle checkpoint?)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if head.startswith(b"GGUF"):
        return "a GGUF file"
    lowered = stripped[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "an HTML/XML page (a failed download?)"
    return None


def read_head(path: Path, n: int = 64) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise LlmcliError(f"cannot read: {exc.strerror or exc}", path=path) from None


def read_json_object(path: Path, max_bytes: int = 20 * 1024 * 1024, what: str = "JSON file") -> dict[str, Any]:
    """Parse a JSON object from `path`, with a size cap and errors that say what is wrong."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LlmcliError(f"cannot read: {exc.strerror or exc}", path=path) from None
    if size > max_bytes:
        raise LlmcliError(f"{what} is {size:,} bytes, more than the {max_bytes:,} allowed", path=path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LlmcliError(f"cannot read: {exc.strerror or exc}", path=path) from None
    kind = sniff(raw[:64])
    if kind is not None:
        raise LlmcliError(f"is {kind}, not a {what}", path=path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LlmcliError(f"is not UTF-8 text (bad byte at offset {exc.start})", path=path) from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise LlmcliError(f"{what} is nested too deeply", path=path) from None
    except json.JSONDecodeError as exc:
        raise LlmcliError(f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", path=path) from None
    if not isinstance(data, dict):
        raise LlmcliError(f"{what} must be a JSON object, found {type(data).__name__}", path=path)
    return data


def inside(root: Path, candidate: Path) -> bool:
    """True when `candidate`, with symlinks resolved, stays within `root`."""
    try:
        real_root = Path(os.path.realpath(root))
        real = Path(os.path.realpath(candidate))
    except (OSError, ValueError):
        return False
    return real == real_root or real_root in real.parents


def allowed_root(model_dir: Path) -> Path:
    """Where a model's files may really live: the directory itself, or for a Hugging Face cache snapshot
    (models--org--name/snapshots/<rev>, whose files are symlinks into ../../blobs) the whole repo folder."""
    snapshots = model_dir.parent
    if snapshots.name == "snapshots" and snapshots.parent.name.startswith("models--"):
        return snapshots.parent
    return model_dir


def safe_child(root: Path, name: object, source: Path) -> Path:
    """Resolve a file name that a model file (e.g. an index) refers to, refusing escapes."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise LlmcliError(f"names an invalid file {name!r}", path=source)
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise LlmcliError(f"points outside the model directory: {name!r}", path=source)
    child = root / name
    if not inside(allowed_root(root), child):
        raise LlmcliError(f"points outside the model directory (through a symlink): {name!r}", path=source)
    return child
