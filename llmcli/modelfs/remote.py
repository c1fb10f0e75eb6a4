"""Hub models that are not in the local cache, when the Hub can be reached (HF_HUB_OFFLINE unset).

`inspect` fetches only the small JSON/tokenizer files and reads the safetensors headers remotely through
huggingface_hub's header-only API (`get_safetensors_metadata`, HTTP range requests): never the weights.
`generate` downloads the model into the HF cache (progress bars on stderr on a terminal).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, squash
from llmcli.modelfs.checkpoint import DTYPE_NAMES, Checkpoint, ShardInfo, TensorInfo

SMALL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "model.safetensors.index.json",
    "vocab.json",
    "merges.txt",
    "adapter_config.json",
)
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]


def _quiet_hub() -> None:
    """huggingface_hub logs each retry on stderr; llmcli reports the outcome in one line instead."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()


def hub_online() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on")


def _hub_error(repo_id: str, exc: Exception) -> LlmcliError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):  # a subclass of RepositoryNotFoundError: test it first
        return LlmcliError(f"{repo_id}: the model is gated", hint="accept its licence on the Hub and log in")
    if isinstance(exc, RepositoryNotFoundError):
        return LlmcliError(f"{repo_id}: no such model on the Hub (or it is private)")
    if isinstance(exc, RevisionNotFoundError):
        return LlmcliError(f"{repo_id}: no such revision")
    detail = squash(exc, 200) or type(exc).__name__
    return LlmcliError(f"{repo_id}: cannot reach the Hub ({detail})", hint="set HF_HUB_OFFLINE=1 to use the cache only")


def remote_checkpoint(meta: Any) -> Checkpoint:
    """safetensors headers read remotely, in llmcli's Checkpoint shape (sizes on disk are unknown: header sums)."""
    ckpt = Checkpoint(kind="safetensors")
    # Shards in the index's order, as read_checkpoint lists local ones.
    order = list(dict.fromkeys(meta.weight_map.values())) if meta.sharded else []
    order += sorted(f for f in meta.files_metadata if f not in order)
    for file in order:
        file_meta = meta.files_metadata[file]
        tensors = [TensorInfo(name, info.dtype, list(info.shape), file) for name, info in file_meta.tensors.items()]
        dtypes: dict[str, int] = {}
        for t in tensors:
            key = DTYPE_NAMES.get(t.dtype, t.dtype)
            dtypes[key] = dtypes.get(key, 0) + 1
            ckpt.tensors[t.name] = t
        size = sum(t.nbytes for t in tensors)
        ckpt.shards.append(ShardInfo(file, size, len(tensors), sum(t.numel for t in tensors), size, dtypes))
        if meta.sharded:
            listed = {k for k, v in meta.weight_map.items() if v == file}
            missing = sorted(listed - {t.name for t in tensors})
            if missing:
                ckpt.checks.append(f"index names {len(missing)} tensor(s) that {file} does not hold: {missing[0]}")
    return ckpt


def fetch_metadata(repo_id: str, revision: str | None) -> tuple[Path, Checkpoint | None]:
    """The small files in the HF cache, and the checkpoint's headers read remotely."""
    from huggingface_hub import HfApi, hf_hub_download

    _quiet_hub()
    api = HfApi()
    try:
        files = api.list_repo_files(repo_id, revision=revision)
        local = None
        for name in SMALL_FILES:
            if name in files:
                local = Path(hf_hub_download(repo_id, name, revision=revision))
        if local is None:
            raise LlmcliError(f"{repo_id}: the repository has no config.json")
        meta = (
            api.get_safetensors_metadata(repo_id, revision=revision)
            if any(f.endswith(".safetensors") for f in files)
            else None
        )
    except LlmcliError:
        raise
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and its HTTP client raise many kinds
        raise _hub_error(repo_id, exc) from None
    ckpt = remote_checkpoint(meta) if meta is not None else None
    index = local.parent / "model.safetensors.index.json"
    if ckpt is not None and index.is_file():
        from llmcli.modelfs.files import read_json_object

        total = (read_json_object(index, what="safetensors index").get("metadata") or {}).get("total_size")
        if isinstance(total, int):
            ckpt.index_total_size = total
            if total != ckpt.tensor_bytes:
                ckpt.checks.append(
                    f"index total_size {total:,} differs from the headers' byte sum {ckpt.tensor_bytes:,}"
                )
    return local.parent, ckpt


def download_model(repo_id: str, revision: str | None, show_progress: bool) -> Path:
    from huggingface_hub import snapshot_download

    _quiet_hub()
    if show_progress:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=MODEL_PATTERNS))
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(repo_id, exc) from None
