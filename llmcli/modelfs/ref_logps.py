"""A DPO reference pass kept for reuse (`dpo --save-ref-logps`, `--ref-logps`; TRL's precompute_ref_log_probs):
the reference's log-probability of every completion token of every pair, so that a later evaluation of
another policy on the same pairs needs no reference model. A safetensors file (numpy, no torch):

- `chosen_logps`, `rejected_logps` (float32): each pair's completion tokens, pair after pair;
- `chosen_lengths`, `rejected_lengths` (int32, one per pair), `lines` (int32): where each pair's tokens are.

The metadata names the format, the hash of the pairs' token ids, the tokenizer's hash and the reference model
(its label and identity digest). A file made for other pairs, another tokenizer or another reference is refused
by name. It keeps no distributions: the KL figures need the reference model itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, UsageError
from llmcli.modelfs.reference import save_atomically

FORMAT = "llmcli-dpo-ref-logps/1"
ARRAYS = ("chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths", "lines")


@dataclass
class RefLogps:
    lines: list[int]
    chosen: list[list[float]]  # per pair, per completion token
    rejected: list[list[float]]
    pairs_sha256: str
    tokenizer_sha256: str
    reference: dict[str, Any]  # {"label", "digest"}


def pairs_hash(token_ids: list[tuple[list[int], list[int], list[int]]]) -> str:
    """Each pair's prompt, chosen and rejected token ids, hashed in order."""
    return hashlib.sha256(json.dumps(token_ids).encode()).hexdigest()


def write_ref_logps(path: Path, ref: RefLogps) -> int:
    import numpy as np

    def flat(rows: list[list[float]]) -> Any:
        return np.asarray([v for row in rows for v in row], dtype=np.float32)

    arrays = {
        "chosen_logps": flat(ref.chosen),
        "rejected_logps": flat(ref.rejected),
        "chosen_lengths": np.asarray([len(r) for r in ref.chosen], dtype=np.int32),
        "rejected_lengths": np.asarray([len(r) for r in ref.rejected], dtype=np.int32),
        "lines": np.asarray(ref.lines, dtype=np.int32),
    }
    meta = {"format": FORMAT, "pairs_sha256": ref.pairs_sha256, "tokenizer_sha256": ref.tokenizer_sha256,
            "reference": json.dumps(ref.reference)}  # fmt: skip
    return save_atomically(arrays, path, meta)


def read_ref_logps(path: Path) -> RefLogps:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise UsageError(f"--ref-logps {path}: no such file")
    try:
        with safe_open(str(path), "np") as fh:
            meta = fh.metadata() or {}
            arrays = {name: fh.get_tensor(name) for name in ARRAYS if name in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise LlmcliError(f"not a readable file of reference log-probabilities ({str(exc)[:120]})", path=path) from None
    if meta.get("format") != FORMAT or len(arrays) < len(ARRAYS):
        raise LlmcliError(f"not an llmcli dpo --save-ref-logps file (format {meta.get('format')!r})", path=path)
    chosen = _split(arrays["chosen_logps"], arrays["chosen_lengths"], path)
    rejected = _split(arrays["rejected_logps"], arrays["rejected_lengths"], path)
    return RefLogps([int(x) for x in arrays["lines"]], chosen, rejected, meta.get("pairs_sha256", ""),
                    meta.get("tokenizer_sha256", ""), json.loads(meta.get("reference") or "{}"))  # fmt: skip


def _split(values: Any, lengths: Any, path: Path) -> list[list[float]]:
    if int(lengths.sum()) != len(values):
        raise LlmcliError("a damaged file of reference log-probabilities: lengths and values disagree", path=path)
    out, at = [], 0
    for n in lengths.tolist():
        out.append(values[at : at + n].tolist())
        at += n
    return out


def check_ref_logps(ref: RefLogps, *, path: Path, pairs_sha256: str, tokenizer_sha256: str,
                    reference_digest: str | None) -> None:  # fmt: skip
    """The file was made for these pairs, this tokenizer and (when a reference is named too) this reference."""
    if ref.tokenizer_sha256 != tokenizer_sha256:
        raise UsageError(f"--ref-logps {path}: made with another tokenizer than the policy's")
    if ref.pairs_sha256 != pairs_sha256:
        raise UsageError(f"--ref-logps {path}: made for other pairs (their token ids differ from this file's)")
    if reference_digest is not None and ref.reference.get("digest") != reference_digest:
        raise UsageError(f"--ref-logps {path}: made with another reference model ({ref.reference.get('label')})")
