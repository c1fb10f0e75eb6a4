"""Reference files: a model's behaviour on a text, small enough to keep and to send (`score --save-ref`,
`compare --base-ref`). A safetensors file (numpy, no torch):

- `token_ids` (int32, N): the text as the model's tokenizer encoded it;
- `top_ids` (uint16 or int32, P × K) and `top_logprobs` (float32, P × K): each scored position's top K
  candidates, most likely first; `tail_mass` (float32, P): the probability outside them;
- `tail_ids` and `tail_logprobs` (P × S): S tokens drawn from the distribution outside the top K (with
  replacement), which let a comparison estimate the tail's share of the KL instead of only bounding it;
- `target_logprobs` (float32, P): the actual next token's log-probability.

P = N - 1 scored positions (1 .. N-1, strided windows). The metadata names the format, K, the window and
stride, the vocabulary size, the tokenizer's hash and the model; a comparison against a reference made
with another tokenizer or window is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, UsageError

FORMAT = "llmcli-reference/1"
ARRAYS = ("token_ids", "top_ids", "top_logprobs", "tail_mass", "tail_ids", "tail_logprobs", "target_logprobs")


@dataclass
class Reference:
    token_ids: Any  # numpy arrays, as named in ARRAYS
    top_ids: Any
    top_logprobs: Any
    tail_mass: Any
    tail_ids: Any
    tail_logprobs: Any
    target_logprobs: Any
    window: int
    stride: int
    vocab_size: int
    tokenizer_sha256: str
    model: dict[str, Any]

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])


def tokenizer_hash(tokenizer: Any) -> str:
    """The vocabulary and special tokens, hashed: what decides the ids (not the chat template, not the files)."""
    import hashlib

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    special = sorted(getattr(tokenizer, "all_special_tokens", []) or [])
    blob = json.dumps([vocab, special], ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def write_reference(path: Path, ref: Reference) -> int:
    """Written to a temporary file beside `path`, then renamed: never half a reference. Returns its bytes."""
    import numpy as np

    ids_type = np.uint16 if ref.vocab_size <= 65_536 else np.int32
    arrays = {
        "token_ids": np.asarray(ref.token_ids, dtype=np.int32),
        "top_ids": np.ascontiguousarray(ref.top_ids, dtype=ids_type),
        "top_logprobs": np.ascontiguousarray(ref.top_logprobs, dtype=np.float32),
        "tail_mass": np.asarray(ref.tail_mass, dtype=np.float32),
        "tail_ids": np.ascontiguousarray(ref.tail_ids, dtype=ids_type),
        "tail_logprobs": np.ascontiguousarray(ref.tail_logprobs, dtype=np.float32),
        "target_logprobs": np.asarray(ref.target_logprobs, dtype=np.float32),
    }
    meta = {"format": FORMAT, "window": str(ref.window), "stride": str(ref.stride), "vocab_size": str(ref.vocab_size),
            "tokenizer_sha256": ref.tokenizer_sha256, "model": json.dumps(ref.model)}  # fmt: skip
    return save_atomically(arrays, path, meta)


def save_atomically(arrays: dict[str, Any], path: Path, meta: dict[str, str]) -> int:
    """numpy arrays as safetensors, written to a temporary file beside `path` and then renamed: never half a
    file. Returns its bytes."""
    from safetensors.numpy import save_file

    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # as a plain open() would make it (mkstemp makes 0600)
    try:
        save_file(arrays, temporary, metadata=meta)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def read_reference(path: Path) -> Reference:
    """A reference file, checked whole: safetensors' own header validation, the format, the arrays' shapes."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise LlmcliError("no such reference file", path=str(path))
    try:
        with safe_open(str(path), "np") as fh:
            meta = fh.metadata() or {}
            arrays = {name: fh.get_tensor(name) for name in ARRAYS if name in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise LlmcliError(f"not a readable reference file ({str(exc).splitlines()[0][:120]})", path=str(path)) from None
    if meta.get("format") != FORMAT:
        raise LlmcliError(f"not an llmcli reference file (format {meta.get('format')!r})", path=str(path))
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise LlmcliError(f"a damaged reference file: no {', '.join(missing)}", path=str(path))
    try:
        ref = Reference(**arrays, window=int(meta["window"]), stride=int(meta["stride"]),
                        vocab_size=int(meta["vocab_size"]), tokenizer_sha256=meta["tokenizer_sha256"],
                        model=json.loads(meta.get("model") or "{}"))  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise LlmcliError(f"a damaged reference file: bad metadata ({exc})", path=str(path)) from None
    _check_shapes(ref, path)
    return ref


def _check_shapes(ref: Reference, path: Path) -> None:
    positions = len(ref.token_ids) - 1
    shapes_ok = (
        ref.top_ids.ndim == 2
        and ref.top_ids.shape == ref.top_logprobs.shape
        and ref.top_ids.shape[0] == positions
        and ref.tail_mass.shape == ref.target_logprobs.shape == (positions,)
        and ref.tail_ids.shape == ref.tail_logprobs.shape
        and ref.tail_ids.ndim == 2
        and ref.tail_ids.shape[0] == positions
    )
    if not shapes_ok or positions < 1:
        raise LlmcliError("a damaged reference file: its arrays do not agree in length", path=str(path))


def check_against(ref: Reference, *, path: Path, tokenizer_sha256: str, ids: list[int], window: int | None,
                  stride: int | None) -> None:  # fmt: skip
    """A reference fits a comparison: the same tokenizer, the same text ids, the same windows."""
    if ref.tokenizer_sha256 and ref.tokenizer_sha256 != tokenizer_sha256:  # "" from an engine: ids alone decide
        raise UsageError(f"{path}: the reference was made with another tokenizer (vocabulary hash differs)")
    for name, asked, held in (("--window", window, ref.window), ("--stride", stride, ref.stride)):
        if asked is not None and asked != held:
            raise UsageError(f"{path}: the reference was scored with {name} {held}, not {asked}")
    first_difference(list(ref.token_ids), ids, what=f"{path}'s text")


def first_difference(a: list[int], b: list[int], *, what: str) -> None:
    """Two encodings of one text must be the same ids: exit 2 naming the first position that differs."""
    if list(a) == list(b):
        return
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if int(x) != int(y)), min(len(a), len(b)))
    raise UsageError(
        f"the tokenizers disagree on {what} at token {at} ({len(a)} and {len(b)} tokens): compare needs the same ids"
    )
