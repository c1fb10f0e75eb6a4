"""Where a compiled decoding step is kept and how a kept one is trusted.

A step is compiled for one model architecture and shape (its config.json), its tensors' names, shapes and
dtypes (the dtype and the quantization's layout), attention implementation, CPU
(model and flags: the library's kernels use what the CPU has) and pair of torch and transformers versions
(the traced forward is theirs); a library that holds the weights themselves (engine.step.variant) adds the
model files' identity (modelfs.identity: every weight file's SHA-256). The key hashes all of them into a folder
name under `steps/` in llmcli's home. The folder holds the library and a manifest naming the key and the
library's SHA-256; a folder whose manifest is missing, unreadable, of another key or whose library's hash
differs is damaged and built again (a library whose size, modification time and inode are still those the
manifest recorded is not hashed again: a weighty library would cost a read of itself every run). Writes go
through a temporary folder and a rename, so a killed build leaves nothing half-written behind. No torch here
beyond its version string.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

FORMAT = 1  # bumped when what the library takes or returns changes
MANIFEST = "manifest.json"
CONSTANTS = "constants.safetensors"  # what inductor added to the graph (engine.step.export._made_constants)


def step_key(config: dict[str, Any], *, tensors: list[str], attn: str | None, cpu: dict[str, Any]) -> dict[str, Any]:
    """`tensors`: each parameter and buffer as 'name shape dtype' (the dtype and the quantization's layout)."""
    import torch
    import transformers

    config_text = json.dumps(config, sort_keys=True, default=str)
    return {
        "format": FORMAT,
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "tensors_sha256": hashlib.sha256("\n".join(tensors).encode()).hexdigest(),
        "attention": attn,
        "cpu": cpu_text(cpu),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def cpu_text(cpu: dict[str, Any]) -> str:
    """The CPU as a key names it (engine.load.environment.cpu()'s model, flags and machine)."""
    return f"{cpu.get('model')}|{','.join(cpu.get('flags', []))}|{cpu.get('machine')}"


def with_weights(key: dict[str, Any], digest: str) -> dict[str, Any]:
    """The key of a library that holds the weights: `digest` is the model files' (modelfs.identity)."""
    return {**key, "weights_sha256": digest}


def holds_weights(key: dict[str, Any]) -> bool:
    return "weights_sha256" in key


def held_kept(key: dict[str, Any]) -> bool:
    """Whether a library that holds the weights is kept for `key`'s model, dtype and CPU, whatever the weights
    (so that a model with none kept is not hashed for nothing)."""
    for _, manifest in manifests():
        kept_key = manifest["key"]
        if holds_weights(kept_key) and {k: v for k, v in kept_key.items() if k != "weights_sha256"} == key:
            return True
    return False


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """(folder, manifest) of every kept step whose manifest reads as one (a dict with a dict `key`), by folder."""
    found = []
    for manifest_path in sorted(steps_dir().glob(f"*/{MANIFEST}")):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and isinstance(manifest.get("key"), dict):
            found.append((manifest_path.parent, manifest))
    return found


def steps_dir() -> Path:
    from llmcli.modelfs.default_model import cache_home

    return cache_home() / "steps"


def folder_of(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return steps_dir() / digest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def kept(key: dict[str, Any]) -> tuple[Path | None, str | None]:
    """(the library, None) for a good entry; (None, None) when there is none; (None, why) when it is damaged.
    The manifest's `inputs` (the dtypes of what generate() passes) is read by `inputs_of`."""
    folder = folder_of(key)
    if not folder.exists():
        return None, None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, "its manifest is missing or unreadable"
    if not isinstance(manifest, dict) or manifest.get("key") != key or not isinstance(manifest.get("library"), str):
        return None, "its manifest names another model, dtype, CPU or torch"
    library = folder / Path(manifest["library"]).name
    try:
        if _stat_of(library) != manifest.get("stat") and sha256_of(library) != manifest.get("sha256"):
            return None, "its library does not match the manifest's hash"
        if sha256_of(folder / CONSTANTS) != manifest.get("constants_sha256"):
            return None, "its constants do not match the manifest's hash"
    except OSError:
        return None, "its library or constants are missing"
    return library, None


def _stat_of(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def listed() -> list[dict[str, Any]]:
    """Every kept step as `llmcli models` lists it: folder, bytes, the cache's dtype, torch, build time,
    whether the library holds the weights ("held") or they are bound to it at load ("bound"), the rows it takes
    ("one", or "many": serve's batch of rows), the model directory it was built from and the quantization
    scheme whose layers it binds ("int4 g32"; None for none, or for a step kept before these were recorded)."""
    found = []
    for folder, manifest in manifests():
        try:
            key, inputs = manifest["key"], manifest.get("inputs") or ["?"]
            dtype = str(inputs[-1]).removeprefix("torch.")
            found.append({"path": str(folder), "bytes": dir_bytes(folder), "dtype": dtype, "torch": key.get("torch"),
                          "build_seconds": manifest.get("build_seconds"), "model": manifest.get("source"),
                          "weights": "held" if holds_weights(key) else "bound",
                          "rows": "many" if key.get("rows") else "one", "scheme": manifest.get("scheme")})  # fmt: skip
        except (OSError, TypeError, AttributeError):
            continue
    return found


def dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def inputs_of(library: Path) -> list[str]:
    try:
        return list(json.loads((library.parent / MANIFEST).read_text(encoding="utf-8")).get("inputs", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return []


def keep(key: dict[str, Any], library: Path, *, constants: dict[str, Any], seconds: float, inputs: list[str],
         source: str | None = None, scheme: str | None = None) -> Path:  # fmt: skip
    """Moves a freshly built library into the key's folder, with its manifest (`source`: the model directory it
    was built from, `scheme`: the quantization whose layers it binds, both for `llmcli models`); returns the kept
    library. Its file name holds its hash: a process that
    loaded an earlier build holds that file open under its own name (the dynamic loader reuses a library it has
    loaded by name)."""
    from safetensors.torch import save_file

    folder = folder_of(key)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        digest = sha256_of(library)
        name = f"step-{digest[:16]}.so"
        shutil.copyfile(library, staging / name)
        save_file({name: t.contiguous() for name, t in constants.items()}, str(staging / CONSTANTS))
        manifest = {"key": key, "library": name, "sha256": digest, "constants_sha256": sha256_of(staging / CONSTANTS),
                    "stat": _stat_of(staging / name), "inputs": inputs, "build_seconds": round(seconds, 1),
                    "source": source, "scheme": scheme}  # fmt: skip
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder / name
