"""Shell completion for model arguments: directories to walk into (model directories first) and .gguf files.

Typer calls these only when the shell asks (`_LLMCLI_COMPLETE` set), so they cost nothing at start-up;
choices (--dtype, --attn, --quantize, ...) complete from their Enums on their own.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_FILES = ("config.json", "adapter_config.json")


def model_paths(incomplete: str) -> list[str]:
    head, sep, prefix = (incomplete or "").rpartition("/")
    lead = head + sep  # what stays in front of each name: "", "dir/" or "/"
    try:
        entries = sorted(os.scandir(os.path.expanduser(lead) or "."), key=lambda e: e.name)
    except OSError:
        return []
    models, dirs, files = [], [], []
    for entry in entries:
        if not entry.name.startswith(prefix) or (entry.name.startswith(".") and not prefix.startswith(".")):
            continue
        try:
            if entry.is_dir():
                is_model = any((Path(entry.path) / name).is_file() for name in MODEL_FILES)
                (models if is_model else dirs).append(f"{lead}{entry.name}/")
            elif entry.name.endswith(".gguf"):
                files.append(f"{lead}{entry.name}")
        except OSError:
            continue
    return models + files + dirs
