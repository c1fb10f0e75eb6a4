"""Deciding what a model argument names: a Hugging Face directory or a GGUF file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmcli.errors import LlmcliError
from llmcli.modelfs.files import read_head, sniff


@dataclass
class ModelRef:
    kind: str  # "hf" (a directory) or "gguf" (a file)
    path: Path


def locate(arg: str) -> ModelRef:
    path = Path(arg).expanduser()
    if not path.exists():
        if path.is_symlink():
            raise LlmcliError("is a broken symlink", path=path)
        raise LlmcliError("no such file or directory", path=path)
    if path.is_dir():
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
