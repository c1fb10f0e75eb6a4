"""`llmcli dpo`: preference pairs scored the way TRL's `DPOTrainer.evaluate()` scores them, without training.

Each pair is tokenized as TRL 1.16 tokenizes it (pair_tokens), both completions go through the policy and the
reference in batches of right-padded sequences, and per pair come: the completions' summed log-probabilities
under each model, the implicit rewards beta × (log pi − log pi_ref), the margin, the loss (sigmoid, ipo or
hinge, TRL's formulas), the mean per-token KL(pi ‖ pi_ref) over each completion, and the completion token whose
log-ratio moved most. Only one batch's logits live at a time: memory follows the batch, not the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from llmcli.analysis.batching import budget_batches, right_padded
from llmcli.analysis.pair_tokens import Tokenized

BATCH_TOKENS = 2048  # tokens of one forward pass (padding included): its logits are all that is held at once


@dataclass
class Model:
    """One side: a loaded model, with its LoRA adapter switched off for this side if asked."""

    loaded: Any
    adapter_off: bool = False


@dataclass
class Stored:
    """The reference as a file of its log-probabilities (--ref-logps): line → the chosen and the rejected
    completion's token log-probabilities. It keeps no distributions, so it gives no KL."""

    tokens: dict[int, tuple[list[float], list[float]]]
    label: dict[str, Any]


@dataclass
class Fetched:
    """The reference on a server (--ref-server): `fetch(ids)` gives log p of ids[1:], each given the ones before
    (prompt log-probabilities, asked for by token ids). No distributions travel, so it gives no KL."""

    fetch: Callable[[list[int]], list[float]]
    label: dict[str, Any]


@dataclass
class Completion:
    """One completion under both models: summed log-probabilities, the KL and the token that moved most."""

    logps: float
    ref_logps: float
    tokens: int
    kl: float | None  # mean over the completion's tokens of KL(pi || pi_ref) at that position
    moved: dict[str, Any]
    ref_token_logps: list[float]  # what --save-ref-logps keeps
    length: int  # the completion's tokens, an unscored first one too: what TRL's IPO divides by


def pair_figures(pair: Tokenized, chosen: Completion, rejected: Completion, *, beta: float, loss: str) -> dict:
    chosen_ratio, rejected_ratio = chosen.logps - chosen.ref_logps, rejected.logps - rejected.ref_logps
    delta = chosen_ratio - rejected_ratio
    if loss == "sigmoid":
        value = softplus(-beta * delta)  # -log sigmoid(beta * delta)
    elif loss == "hinge":
        value = max(0.0, 1 - beta * delta)
    else:  # ipo: per-token averages over TRL's completion mask (which counts an unscored first token)
        value = (chosen_ratio / max(chosen.length, 1) - rejected_ratio / max(rejected.length, 1) - 1 / (2 * beta)) ** 2
    chosen_reward, rejected_reward = beta * chosen_ratio, beta * rejected_ratio
    moved = max((chosen.moved | {"side": "chosen"}, rejected.moved | {"side": "rejected"}),
                key=lambda m: abs(m["logratio"]))  # fmt: skip
    return {
        "line": pair.line,
        "chosen_logps": chosen.logps,
        "rejected_logps": rejected.logps,
        "ref_chosen_logps": chosen.ref_logps,
        "ref_rejected_logps": rejected.ref_logps,
        "chosen_reward": chosen_reward,
        "rejected_reward": rejected_reward,
        "margin": chosen_reward - rejected_reward,
        "correct": chosen_reward > rejected_reward,
        "loss": value,
        "chosen_tokens": chosen.tokens,
        "rejected_tokens": rejected.tokens,
        "kl_chosen": chosen.kl,
        "kl_rejected": rejected.kl,
        "moved": moved,
    }


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def score_pairs(
    policy: Side, reference: Side, pairs: list[Tokenized], *, beta: float, loss: str, decode: Callable[[int], str],
    advance: Callable[[], None] | None = None, keep: Callable[[Tokenized, Completion, Completion], None] | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Each pair's figures, in file order, batch by batch; `keep` sees each pair's completions as well."""
    for batch in batches(pairs):
        sequences = [(p, side) for p in batch for side in ("chosen", "rejected")]
        done = completions(policy, reference, sequences)
        for completion in done:
            completion.moved["token"] = decode(completion.moved["token_id"])
        for index, pair in enumerate(batch):
            chosen, rejected = done[2 * index], done[2 * index + 1]
            if keep is not None:
                keep(pair, chosen, rejected)
            yield pair_figures(pair, chosen, rejected, beta=beta, loss=loss)
            if advance is not None:
                advance()


def batches(pairs: list[Tokenized]) -> Iterator[list[Tokenized]]:
    """Pairs (or kto's rows) in order, two sequences each, within BATCH_TOKENS a pass."""
    return budget_batches(pairs, lambda pair: 2 * pair.longest, BATCH_TOKENS)


Side = Model | Stored | Fetched


def completions(policy: Side, reference: Side, sequences: list[tuple[Tokenized, str]]) -> list[Completion]:
    ids = [p.prompt + p.completion(side) for p, side in sequences]
    spans = [(len(p.prompt) + p.unscored, len(p.prompt) + len(p.completion(side))) for p, side in sequences]
    pi_rows, pi = _side(policy, sequences, ids, spans)
    ref_rows, ref = (pi_rows, pi) if reference == policy else _side(reference, sequences, ids, spans)
    out = []
    for i, (start, end) in enumerate(spans):
        kl = None
        if pi_rows[i] is not None and ref_rows[i] is not None:
            rows = ref_rows[i].to(pi_rows[i].device)
            kl = float((pi_rows[i].exp() * (pi_rows[i] - rows)).sum(dim=-1).mean())
        pair, side = sequences[i]
        out.append(_completion(pi[i], ref[i].to(pi[i].device), ids[i][start:end], kl, skipped=pair.unscored,
                               length=len(pair.completion(side))))  # fmt: skip
    return out


def _side(side: Side, sequences: list[tuple[Tokenized, str]], ids: list[list[int]],
          spans: list[tuple[int, int]]) -> tuple[list[Any], list[Any]]:  # fmt: skip
    """Each completion's distributions (None where they do not travel) and its tokens' log-probabilities."""
    import torch

    if isinstance(side, Model):
        rows = _rows(side, ids, spans)
        picked = [r.gather(1, torch.tensor(i[a:b], device=r.device).unsqueeze(1)).squeeze(1)
                  for r, i, (a, b) in zip(rows, ids, spans, strict=True)]  # fmt: skip
        return rows, picked
    if isinstance(side, Stored):
        values = [side.tokens[p.line][0 if which == "chosen" else 1] for p, which in sequences]
    else:
        values = [side.fetch(i)[a - 1 : b - 1] for i, (a, b) in zip(ids, spans, strict=True)]
    return [None] * len(ids), [torch.tensor(v, dtype=torch.float32) for v in values]


def _rows(side: Model, ids: list[list[int]], spans: list[tuple[int, int]]) -> list[Any]:
    """log pi(· | before) at each completion position of each sequence, float32 (one forward for the batch)."""
    import torch

    from llmcli.engine.load.devices import input_device

    model = side.loaded.model
    tokens, mask = right_padded(ids, side.loaded.tokenizer.pad_token_id or 0, input_device(model))
    off = model.disable_adapter() if side.adapter_off else nullcontext()
    with torch.inference_mode(), off:
        logits = model(input_ids=tokens, attention_mask=mask, use_cache=False).logits
    # The row before a token predicts it.
    return [torch.log_softmax(logits[b, start - 1 : end - 1].float(), dim=-1) for b, (start, end) in enumerate(spans)]


def _completion(pi: Any, ref: Any, tokens: list[int], kl: float | None, *, skipped: int, length: int) -> Completion:
    """A completion's figures from both sides' log-probabilities of its scored `tokens` (`kl` from their
    distributions); `skipped` tokens before them went unscored, of `length` in all."""
    if not tokens:  # KTO's mismatched completion of one token after an empty prompt: nothing scored, as in TRL
        return Completion(0.0, 0.0, 0, kl, {"position": 0, "token_id": None, "logratio": 0.0}, [], length)
    ratio = pi - ref
    at = int(ratio.abs().argmax())
    moved = {"position": skipped + at, "token_id": tokens[at], "prob": float(pi[at].exp()),
             "ref_prob": float(ref[at].exp()), "logratio": float(ratio[at])}  # fmt: skip
    return Completion(float(pi.sum()), float(ref.sum()), len(tokens), kl, moved, ref.tolist(), length)
