"""`llmcli dpo --loss kto`: unpaired, labelled completions scored the way TRL 1.16's `KTOTrainer.evaluate()`
scores them, without training.

Each row is tokenized as TRL tokenizes it (analysis.pair_tokens.tokenize_unpaired) and its completion goes
through the policy and the reference (analysis.dpo's batches). KTO's reference point is a KL estimate: the mean
over the rows of log pi − log pi_ref of a mismatched completion (row i's prompt with row i−1's completion, the
rotation TRL makes within a batch), clamped at 0. Per row the implicit reward beta × (log pi − log pi_ref), and
the loss 1 − sigmoid(beta × (reward/beta − KL)) for a desirable row, 1 − sigmoid(beta × (KL − reward/beta)) for
an undesirable one, each times its weight. TRL computes these per batch; here the file is the batch (equal to
TRL's figures when its train and eval batches hold the whole file, as benchmarks/kto_trl.py runs it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmcli.analysis.dpo import Side, batches, completions
from llmcli.analysis.pair_tokens import Tokenized


@dataclass(frozen=True)
class Weights:
    desirable: float = 1.0
    undesirable: float = 1.0


Scored = tuple[list[dict[str, Any]], float]


def score_rows(policy: Side, reference: Side, rows: list[Tokenized], labels: dict[int, bool], *, beta: float,
               weights: Weights, advance: Callable[[], None] | None = None) -> Scored:  # fmt: skip
    """Every row's figures in file order, and the KL estimate (the rows' losses depend on it: all are scored
    before any is final)."""
    scored = []
    for batch in batches(rows):
        done = completions(policy, reference, [(row, side) for row in batch for side in ("chosen", "rejected")])
        for index, row in enumerate(batch):
            scored.append((row, done[2 * index], done[2 * index + 1]))
            if advance is not None:
                advance()
    mismatched = [(kl.logps - kl.ref_logps) for _, _, kl in scored]
    kl = max(sum(mismatched) / len(mismatched), 0.0)
    return [_row(row, own, labels[row.line], kl, beta=beta, weights=weights) for row, own, _ in scored], kl


def _row(row: Tokenized, own: Any, label: bool, kl: float, *, beta: float, weights: Weights) -> dict[str, Any]:
    ratio = own.logps - own.ref_logps
    if label:
        loss = weights.desirable * (1 - _sigmoid(beta * (ratio - kl)))
    else:
        loss = weights.undesirable * (1 - _sigmoid(beta * (kl - ratio)))
    return {"line": row.line, "label": label, "logps": own.logps, "ref_logps": own.ref_logps, "reward": beta * ratio,
            "loss": loss, "tokens": own.tokens, "kl": own.kl}  # fmt: skip


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def summary(rows: list[dict[str, Any]], kl: float) -> dict[str, float | None]:
    """TRL's KTO metrics over the file: the loss and KL, and per label the mean reward and log-probability."""

    def mean(key: str, label: bool) -> float | None:
        values = [r[key] for r in rows if r["label"] is label]
        return sum(values) / len(values) if values else None

    chosen, rejected = mean("reward", True), mean("reward", False)
    return {
        "loss": sum(r["loss"] for r in rows) / len(rows),
        "kl": kl,
        "rewards/chosen": chosen,
        "logps/chosen": mean("logps", True),
        "rewards/rejected": rejected,
        "logps/rejected": mean("logps", False),
        "rewards/margins": None if chosen is None or rejected is None else chosen - rejected,
    }
