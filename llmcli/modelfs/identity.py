"""A model's identity: SHA-256 of config.json, generation_config.json, the tokenizer files and every weight file
whole, one digest over them; a GGUF file's own hash beside it. A weight file is read once: its hash is kept in
llmcli's cache by path, size, modification time and inode, so a second run costs a stat; in a Hub cache snapshot
the blob a shard links to is named by its LFS SHA-256, the hash of the whole file, which costs nothing.

Records made before weights were hashed whole hold each shard's header hash ("model.safetensors (header)"):
`changed_files` compares such a record by headers, as it was made, and says so.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path
from typing import Any

KIND = "sha256 of each file, weights whole"
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
    """The 8-byte length and the JSON header of a safetensors file (records made before weights were hashed)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
        return hashlib.sha256(raw + fh.read(min(length, 100 * 2**20))).hexdigest()


LFS_BLOB = re.compile(r"^[0-9a-f]{64}$")


def weights_sha256(path: Path) -> str:
    """A weight file's SHA-256: its Hub blob's name where it links to one, else hashed once and remembered."""
    from llmcli.modelfs.memo import read_memo, write_memo

    target = path.resolve()
    if path.is_symlink() and target.parent.name == "blobs" and LFS_BLOB.match(target.name):
        return target.name
    stat = target.stat()
    key = f"{target}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"
    known = read_memo("file-sha256.json")
    if key not in known:
        stale = [k for k in known if k.startswith(f"{target}\0")]  # the same path before it changed
        known = {k: v for k, v in known.items() if k not in stale} | {key: _sha256_file(target)}
        write_memo("file-sha256.json", known)
    return known[key]


def file_hashes(directory: Path, *, headers_only: bool = False) -> dict[str, str]:
    hashes = {name: _sha256_file(directory / name) for name in FILES if (directory / name).is_file()}
    for shard in sorted(directory.glob("*.safetensors")):
        if headers_only:
            hashes[shard.name + HEADER_SUFFIX] = _header_sha256(shard)
        else:
            hashes[shard.name] = weights_sha256(shard)
    return hashes


def digest_of(hashes: dict[str, str]) -> str:
    blob = "".join(f"{name}\0{value}\n" for name, value in sorted(hashes.items()))
    return hashlib.sha256(blob.encode()).hexdigest()


def identity(directory: Path, *, gguf: Path | None = None, revision: str | None = None,
             headers_only: bool = False) -> dict[str, Any]:  # fmt: skip
    """{"kind", "digest", "files": {name: sha256}} and, where they apply, the GGUF file's hash and the Hub
    revision (`headers_only`: the identity records made before weights were hashed whole, to compare them)."""
    hashes = file_hashes(directory, headers_only=headers_only)
    out: dict[str, Any] = {"kind": KIND, "digest": digest_of(hashes), "files": hashes}
    if headers_only:
        out["kind"] = "sha256 of each file, safetensors headers only"
    if gguf is not None:
        out["gguf"] = {"path": str(gguf), "sha256": weights_sha256(gguf)}
    if revision:
        out["revision"] = revision
    return out


def comparable(recorded: dict[str, Any], directory: Path, *, gguf: Path | None = None) -> dict[str, Any]:
    """The identity of `directory` made the way `recorded` was made (whole files, or an older record's headers)."""
    old = any(name.endswith(HEADER_SUFFIX) for name in recorded.get("files") or {})
    return identity(directory, gguf=gguf, headers_only=old)


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
