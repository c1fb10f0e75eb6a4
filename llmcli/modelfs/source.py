"""Which transformers directory a model argument names: a path, a Hub id, a .gguf file, or the default."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ModelSource:
    """Where the weights come from: `path` is always a transformers directory."""

    path: Path
    label: str  # what the user named (a path, a .gguf file, or "default")
    gguf: Path | None = None


def resolve_model(arg: str | None, *, revision: str | None = None, verbose: bool = False) -> ModelSource:
    """--model, else $LLMCLI_MODEL, else the embedded default; GGUF files go through the cache.

    `verbose`: say on stderr what takes long (a download, a first GGUF conversion).
    """
    from llmcli.modelfs.default_model import default_gguf, ensure_converted
    from llmcli.modelfs.locate import locate

    progress = progress_printer(verbose)
    name = arg or os.environ.get("LLMCLI_MODEL") or None
    if name is None:
        gguf = default_gguf()
        return ModelSource(ensure_converted(gguf, conversion_progress(progress)), "default", gguf)
    ref = locate(name, revision)
    if ref.kind == "hub":
        from llmcli.modelfs.remote import download_model

        progress(f"downloading {ref.repo_id} into the Hugging Face cache")
        return ModelSource(download_model(ref.repo_id, ref.revision, show_progress=verbose), name)
    if ref.kind == "gguf":
        return ModelSource(ensure_converted(ref.path, conversion_progress(progress)), name, ref.path)
    return ModelSource(ref.path, name)


def progress_printer(enabled: bool) -> Callable[[str], None]:
    """Progress notes on stderr ("llmcli: converting…"), or nothing when not enabled. Written with errors'
    plain stderr line: this layer reads files and prints nothing else (no Rich, no output layer)."""
    from llmcli.errors import write_stderr

    def show(message: str) -> None:
        if enabled:
            write_stderr(f"llmcli: {message}…")

    return show


def conversion_progress(progress: Callable[[str], None]) -> Callable[[str], None]:
    def show(step: str) -> None:
        progress(f"first use of this GGUF: {step} (once; later runs use the cache)")

    return show
