"""Deciding what a model argument names: a Hugging Face directory or a GGUF file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llmcli.errors import LlmcliError
from llmcli.modelfs.files import read_head, sniff


@dataclass
class ModelRef:
    kind: str  # "hf" (a directory), "gguf" (a file), "adapter" (a PEFT LoRA directory) or "hub" (not cached)
    path: Path
    repo_id: str | None = None
    revision: str | None = None


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")


def hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The local Hugging Face cache's snapshot of a Hub model (HF_HOME / HF_HUB_CACHE respected), never the
    network: llmcli reads what is already cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError, ValueError):
        return None


def locate(arg: str, revision: str | None = None) -> ModelRef:
    path = Path(arg).expanduser()
    if not path.exists() and not path.is_symlink() and HUB_ID.match(arg):
        snapshot = hub_snapshot(arg, revision)
        if snapshot is None:
            from llmcli.modelfs.remote import hub_online

            if hub_online():
                return ModelRef("hub", path, arg, revision)
            raise LlmcliError(
                f"{arg}{'@' + revision if revision else ''} is not in the local Hugging Face cache",
                hint="download it first, e.g. `hf download " + arg + "`, or give a local directory",
            )
        return locate(str(snapshot))
    if not path.exists():
        if path.is_symlink():
            raise LlmcliError("is a broken symlink", path=path)
        raise LlmcliError("no such file or directory", path=path)
    if path.is_dir():
        if (path / "adapter_config.json").is_file() and not (path / "config.json").exists():
            return ModelRef("adapter", path)
        if not (path / "config.json").exists():
            try:
                empty = not any(path.iterdir())
            except OSError as exc:
                raise LlmcliError(f"cannot list: {exc.strerror or exc}", path=path) from None
            what = "the directory is empty" if empty else "no config.json here"
            raise LlmcliError(f"{what}: not a Hugging Face model directory", path=path)
        return ModelRef("hf", path)
    head = read_head(path, 64)
    if head.startswith(b"GGUF"):
        return ModelRef("gguf", path)
    kind = sniff(head)
    if path.suffix == ".gguf":
        raise LlmcliError(f"is {kind or 'not a GGUF file (bad magic)'}", path=path)
    detail = f" (it is {kind})" if kind else ""
    raise LlmcliError(f"is a file, not a model directory or a GGUF file{detail}", path=path)
