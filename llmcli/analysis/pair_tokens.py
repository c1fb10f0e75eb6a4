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

from llmcli.analysis.pairs import Pair, PairError
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
    if pair.conversational:
        prompt = _ids(tokenizer, pair.prompt, add_generation_prompt=True)
        whole = [_ids(tokenizer, pair.prompt + side) for side in (pair.chosen, pair.rejected)]
    else:
        eos = tokenizer.eos_token or ""
        sides = [text if text.endswith(eos) else text + eos for text in (pair.chosen, pair.rejected)]
        prompt = list(tokenizer(text=pair.prompt)["input_ids"])
        whole = [list(tokenizer(text=pair.prompt + side)["input_ids"]) for side in sides]
    start = min(_shared(prompt, whole[0]), _shared(prompt, whole[1]))
    tokenized = Tokenized(pair.line, prompt[:start], whole[0][start:], whole[1][start:])
    for side in ("chosen", "rejected"):
        if not tokenized.completion(side):
            raise PairError(f"line {pair.line}: the {side} completion tokenizes to nothing")
        if len(tokenized.completion(side)) <= tokenized.unscored:
            raise PairError(f"line {pair.line}: the {side} completion is one token with nothing before it (the "
                            "prompt is empty or merges into it): there is no token to score")  # fmt: skip
    return tokenized


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
    done, skipped = [], []
    for pair in pairs:
        try:
            tokenized = tokenize_pair(tokenizer, pair)
            if context is not None and tokenized.longest > context:
                raise PairError(f"line {pair.line}: the pair is {tokenized.longest:,} tokens, longer than the "
                                f"model's context of {context:,}")  # fmt: skip
        except PairError as exc:
            if not skip_bad:
                raise
            skipped.append(exc.message)
            continue
        done.append(tokenized)
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
