"""Preference pairs tokenized as TRL 1.16's DPOTrainer tokenizes them, so that the figures are TRL's.

The prompt, prompt + chosen and prompt + rejected are tokenized whole (text through the tokenizer, with its
special tokens; messages through the chat template, the prompt with the generation prompt), the tokenizer's
EOS text is appended to a text completion that lacks it, and each completion starts where the tokenized prompt
and the tokenized whole first differ (TRL's common_prefix_length). Where that leaves no prompt (an empty one, or
one that merges into the completion's first token), the completion's first token has no context and goes
unscored, as TRL's shifted loss mask leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmcli.analysis.pairs import Pair, PairError, Unpaired
from llmcli.errors import UsageError


@dataclass
class Tokenized:
    line: int
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]

    def completion(self, side: str) -> list[int]:
        return self.chosen if side == "chosen" else self.rejected

    @property
    def unscored(self) -> int:
        """Completion tokens with no log-probability: the first one when nothing precedes it (TRL's shifted loss
        mask drops it too)."""
        return 0 if self.prompt else 1

    @property
    def longest(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))


def tokenize_pair(tokenizer: Any, pair: Pair) -> Tokenized:
    prompt, whole = _prompt_and_wholes(tokenizer, pair.prompt, (pair.chosen, pair.rejected))
    start = min(_shared(prompt, whole[0]), _shared(prompt, whole[1]))
    tokenized = Tokenized(pair.line, prompt[:start], whole[0][start:], whole[1][start:])
    _check_sides(tokenized, ("chosen", "rejected"))
    return tokenized


def _prompt_and_wholes(tokenizer: Any, prompt: Any, sides: tuple[Any, ...]) -> tuple[list[int], list[list[int]]]:
    """The tokenized prompt, and prompt + each side tokenized whole (a text side with the EOS text appended)."""
    if isinstance(prompt, list):
        return _ids(tokenizer, prompt, add_generation_prompt=True), [_ids(tokenizer, prompt + s) for s in sides]
    eos = tokenizer.eos_token or ""
    texts = [text if text.endswith(eos) else text + eos for text in sides]
    return list(tokenizer(text=prompt)["input_ids"]), [list(tokenizer(text=prompt + t)["input_ids"]) for t in texts]


def _check_sides(tokenized: Tokenized, sides: tuple[str, ...]) -> None:
    for side in sides:
        if not tokenized.completion(side):
            raise PairError(f"line {tokenized.line}: the {side} completion tokenizes to nothing")
        if len(tokenized.completion(side)) <= tokenized.unscored:
            raise PairError(f"line {tokenized.line}: the {side} completion is one token with nothing before it (the "
                            "prompt is empty or merges into it): there is no token to score")  # fmt: skip


def tokenize_unpaired(tokenizer: Any, rows: list[Unpaired], *, context: int | None,
                      skip_bad: bool) -> tuple[list[Tokenized], list[str]]:  # fmt: skip
    """KTO's rows as TRL tokenizes them, each as a Tokenized whose `chosen` is its completion and whose `rejected`
    is the mismatched completion of TRL's KL estimate: the previous row's (the last row's for the first), the
    rotation TRL makes within a batch, here the whole file."""
    skipped: list[str] = []

    def one(row: Unpaired) -> Tokenized:
        prompt, (whole,) = _prompt_and_wholes(tokenizer, row.prompt, (row.completion,))
        start = _shared(prompt, whole)
        tokenized = Tokenized(row.line, prompt[:start], whole[start:], [])
        _check_sides(tokenized, ("chosen",))
        return tokenized

    kept = _kept(rows, one, skip_bad=skip_bad, skipped=skipped)
    for row, before in zip(kept, kept[-1:] + kept[:-1], strict=True):
        row.rejected = before.chosen
    return _kept(kept, lambda row: _within(row, context), skip_bad=skip_bad, skipped=skipped), skipped


def _within(tokenized: Tokenized, context: int | None) -> Tokenized:
    if context is not None and tokenized.longest > context:
        raise PairError(f"line {tokenized.line}: {tokenized.longest:,} tokens, longer than the model's context of "
                        f"{context:,}")  # fmt: skip
    return tokenized


def _kept(items: list[Any], check: Any, *, skip_bad: bool, skipped: list[str]) -> list[Any]:
    """`check(item)` of each item; with `skip_bad` a PairError lists the item in `skipped` instead."""
    out = []
    for item in items:
        try:
            out.append(check(item))
        except PairError as exc:
            if not skip_bad:
                raise
            skipped.append(exc.message)
    return out


def _ids(tokenizer: Any, messages: list[dict[str, str]], **options: Any) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("conversational pairs need a chat template, and this tokenizer has none")
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **options)["input_ids"])


def _shared(ids: list[int], other: list[int]) -> int:
    count = 0
    for a, b in zip(ids, other, strict=False):
        if a != b:
            break
        count += 1
    return count


def tokenize_pairs(tokenizer: Any, pairs: list[Pair], *, context: int | None, skip_bad: bool) -> tuple[list, list]:
    """Every pair tokenized and checked against the context; with `skip_bad` the bad ones are listed instead."""
    skipped: list[str] = []
    done = _kept(pairs, lambda pair: _within(tokenize_pair(tokenizer, pair), context), skip_bad=skip_bad,
                 skipped=skipped)  # fmt: skip
    return done, skipped


def tokenizer_difference(policy: Any, reference: Any) -> str | None:
    """Where two tokenizers part (a token id whose piece differs, or the vocabulary size), or None."""
    a, b = policy.get_vocab(), reference.get_vocab()
    if a == b:
        return None
    by_id = {i: t for t, i in a.items()}
    other = {i: t for t, i in b.items()}
    for token_id in sorted(set(by_id) | set(other)):
        if by_id.get(token_id) != other.get(token_id):
            mine, theirs = by_id.get(token_id), other.get(token_id)
            return f"token id {token_id} is {mine!r} for the policy, {theirs!r} for the reference"
    return None
