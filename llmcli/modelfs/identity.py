"""A model's identity without reading its weights: SHA-256 of config.json, generation_config.json, the
tokenizer files and every safetensors header (the header names each tensor's dtype, shape and offsets; the
weights themselves are not read), one digest over them; for a GGUF file, the file's own hash, kept in the
cache by path, size and modification time so that it is computed once.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "adapter_config.json",
)
HEADER_SUFFIX = " (header)"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _header_sha256(path: Path) -> str:
    """The 8-byte length and the JSON header of a safetensors file: its tensors' names, dtypes and shapes."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
        return hashlib.sha256(raw + fh.read(min(length, 100 * 2**20))).hexdigest()


def file_hashes(directory: Path) -> dict[str, str]:
    hashes = {name: _sha256_file(directory / name) for name in FILES if (directory / name).is_file()}
    for shard in sorted(directory.glob("*.safetensors")):
        hashes[shard.name + HEADER_SUFFIX] = _header_sha256(shard)
    return hashes


def digest_of(hashes: dict[str, str]) -> str:
    blob = "".join(f"{name}\0{value}\n" for name, value in sorted(hashes.items()))
    return hashlib.sha256(blob.encode()).hexdigest()


def gguf_sha256(path: Path) -> str:
    """A GGUF file's SHA-256, remembered in llmcli's cache by path, size and modification time."""
    from llmcli.modelfs.memo import read_memo, write_memo

    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    known = read_memo("gguf-sha256.json")
    if key not in known:
        known[key] = _sha256_file(path)
        write_memo("gguf-sha256.json", known)
    return known[key]


def identity(directory: Path, *, gguf: Path | None = None, revision: str | None = None) -> dict[str, Any]:
    """{"digest", "files": {name: sha256}} and, where they apply, the GGUF file's hash and the Hub revision."""
    hashes = file_hashes(directory)
    out: dict[str, Any] = {"digest": digest_of(hashes), "files": hashes}
    if gguf is not None:
        out["gguf"] = {"path": str(gguf), "sha256": gguf_sha256(gguf)}
    if revision:
        out["revision"] = revision
    return out


def changed_files(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The files whose hashes differ between two identities: 'config.json (changed)', '… (missing)'."""
    before, after = recorded.get("files") or {}, now.get("files") or {}
    words = []
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            state = "missing now" if name not in after else "new" if name not in before else "changed"
            words.append(f"{name} ({state})")
    if (recorded.get("gguf") or {}).get("sha256") not in (None, (now.get("gguf") or {}).get("sha256")):
        words.append(f"{recorded['gguf']['path']} (changed)")
    return words
