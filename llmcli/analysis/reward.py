"""`llmcli reward`: a reward model's scores of completions, as TRL 1.16's RewardTrainer computes them.

Each text is what RewardTrainer tokenizes: a text completion gets the tokenizer's EOS text if it lacks it and
follows its prompt (prompt + completion, one string, through the tokenizer with its special tokens); a
conversation is the prompt's messages and the completion's through the chat template. Sequences go through
the model right-padded with the pad token in batches (the model itself finds each sequence's last token from
the pad id, which is set on its config as RewardTrainer sets it), and a score is the head's one logit.

The file holds preference pairs (TRL's standard, conversational or implicit-prompt formats: analysis.pairs) or
unpaired completions (`prompt` and `completion`, strings or messages, TRL's prompt-completion format).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmcli.analysis.batching import budget_batches, right_padded
from llmcli.analysis.dpo import softplus
from llmcli.analysis.pairs import PairError, parse_pair, parse_unpaired, read_with
from llmcli.errors import LlmcliError, UsageError

BATCH_TOKENS = 4096  # tokens of one forward pass, padding included


def read_rows(path: Path, *, skip_bad: bool = False) -> tuple[str, list[Any], list[str]]:
    """("pairs" or "completions", the rows, the problems of lines left out with `skip_bad`)."""
    kinds: list[str] = []

    def parse(raw: str, number: int) -> Any:
        found, row = _row(raw, number)
        if kinds and kinds[0] != found:
            raise PairError(f"line {number}: a {found[:-1]} in a file of {kinds[0]}: one kind a file")
        kinds[:1] = [found]
        return row

    rows, skipped = read_with(path, parse, skip_bad=skip_bad)
    return kinds[0], rows, skipped


def _row(raw: str, number: int) -> tuple[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PairError(f"line {number}: not JSON ({exc.msg})") from None
    if isinstance(value, dict) and "chosen" in value:
        return "pairs", parse_pair(raw, number)
    if not isinstance(value, dict) or "completion" not in value:
        raise PairError(f"line {number}: expected chosen and rejected (a preference pair) or a completion")
    return "completions", parse_unpaired(raw, number, labelled=False)


def sequence_ids(tokenizer: Any, prompt: Any, completion: Any) -> list[int]:
    """The token ids RewardTrainer scores for one completion after its prompt."""
    if isinstance(completion, list):
        if not getattr(tokenizer, "chat_template", None):
            raise UsageError("conversational rows need a chat template, and the reward model's tokenizer has none")
        messages = prompt + completion
        return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    eos = tokenizer.eos_token or ""
    text = completion if completion.endswith(eos) else completion + eos
    return list(tokenizer(text=prompt + text)["input_ids"])


def sequences(tokenizer: Any, kind: str, rows: list[Any], *, context: int | None) -> list[tuple[int, list[int]]]:
    """(line, ids) for every completion to score: a pair's chosen then its rejected."""
    out = []
    for row in rows:
        sides = (row.chosen, row.rejected) if kind == "pairs" else (row.completion,)
        for side in sides:
            ids = sequence_ids(tokenizer, row.prompt, side)
            if context is not None and len(ids) > context:
                raise PairError(f"line {row.line}: {len(ids):,} tokens, longer than the model's context of {context:,}")
            out.append((row.line, ids))
    return out


def scores(loaded: Any, ids: list[list[int]]) -> Iterator[float]:
    """Each sequence's score, in order, batch by batch."""
    import torch

    from llmcli.engine.load.devices import input_device

    tokenizer, model = loaded.tokenizer, loaded.model
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.config.get_text_config().pad_token_id = pad  # where the model looks for each sequence's last token
    for batch in budget_batches(ids, len, BATCH_TOKENS):
        tokens, mask = right_padded(batch, pad, input_device(model))
        with torch.inference_mode():
            logits = model(input_ids=tokens, attention_mask=mask, use_cache=False).logits
        yield from logits[:, 0].float().tolist()


def scored_rows(loaded: Any, kind: str, sequences: list[tuple[int, list[int]]]) -> Iterator[dict[str, Any]]:
    """Each row's figures in file order from `sequences` (a pair's chosen then its rejected): a pair's scores,
    margin and loss, or a completion's score."""
    values = scores(loaded, [ids for _, ids in sequences])
    for line, _ in sequences[:: 2 if kind == "pairs" else 1]:
        yield pair_row(line, next(values), next(values)) if kind == "pairs" else {"line": line, "score": next(values)}


def pair_row(line: int, chosen: float, rejected: float) -> dict[str, Any]:
    margin = chosen - rejected
    loss = softplus(-margin)  # -log sigmoid(margin)
    return {"line": line, "chosen": chosen, "rejected": rejected, "margin": margin, "correct": chosen > rejected,
            "loss": loss}  # fmt: skip


def summary(kind: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """TRL's RewardTrainer metrics over the whole file (its min, mean and max are over every score)."""
    every = [s for r in rows for s in ((r["chosen"], r["rejected"]) if kind == "pairs" else (r["score"],))]
    out = {"min_reward": min(every), "mean_reward": sum(every) / len(every), "max_reward": max(every)}
    if kind == "pairs":
        count = len(rows)
        out |= {"accuracy": sum(r["correct"] for r in rows) / count, "margin": sum(r["margin"] for r in rows) / count,
                "loss": sum(r["loss"] for r in rows) / count}  # fmt: skip
    return out


def load_reward_model(model: str, spec: Any) -> Any:
    """A reward model, its head checked from config.json before any weight is read."""
    from dataclasses import replace

    from llmcli.engine.load.loader import load
    from llmcli.modelfs.config import load_config
    from llmcli.modelfs.heads import reward_problem
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Quantize

    spec = replace(spec, sequence_classification=True, adapter=None, quantize=Quantize.none)
    source = resolve_model(model, verbose=spec.show_progress)
    problem = reward_problem(load_config(source.path))
    if problem is not None:
        raise LlmcliError(f"not a reward model: {problem}", path=source.path)
    return load(source, spec)
