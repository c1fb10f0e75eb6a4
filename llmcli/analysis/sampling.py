"""`llmcli sample`: N completions per prompt, each under its own seed, on the step scheduler serve decodes with
(every completion a row of one running batch, so a prompt's group and the next prompts' decode together), each
completion scored by the rewards asked for, and each prompt's group summarised as GRPO sees it
(analysis.groups).

Prompts come in TRL's formats: `prompt` as text (given to the model as it is, as TRL's GRPOTrainer gives it) or
as messages (through the chat template with the generation prompt; `messages` is taken as the same); every other
key of the line is a column passed to reward functions. Completion i of the prompt on line L runs under seed
`seed + N × (L − 1) + i`: a resumed run draws what the first run would have.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.lines import split_lines


@dataclass
class PromptRow:
    line: int
    prompt: Any  # text, or a list of messages
    columns: dict[str, Any] = field(default_factory=dict)

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


def read_prompts(path: Path) -> list[PromptRow]:
    """Every line a JSON object with `prompt` (text or messages) or `messages`; exit 1 naming the first bad one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmcliError(f"cannot read the prompts: {exc}", path=path) from None
    rows = []
    for number, raw in enumerate(split_lines(text), 1):
        if raw.strip():
            rows.append(_prompt_row(raw, number, path))
    if not rows:
        raise LlmcliError("no prompts in the file", path=path)
    return rows


def _prompt_row(raw: str, number: int, path: Path) -> PromptRow:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LlmcliError(f"line {number}: not JSON ({exc.msg})", path=path) from None
    key = "prompt" if isinstance(value, dict) and "prompt" in value else "messages"
    prompt = value.get(key) if isinstance(value, dict) else None
    messages_ok = isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt
    )  # fmt: skip
    if not (isinstance(prompt, str) and prompt) and not messages_ok:
        raise LlmcliError(f"line {number}: expected a non-empty prompt (text or messages) or messages", path=path)
    return PromptRow(number, prompt, {k: v for k, v in value.items() if k != key})


def prompt_ids(tokenizer: Any, row: PromptRow) -> list[int]:
    if row.conversational:
        if not getattr(tokenizer, "chat_template", None):
            raise LlmcliError(f"line {row.line}: a conversational prompt needs a chat template; the model has none")
        rendered = tokenizer.apply_chat_template(
            row.prompt, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(rendered["input_ids"])
    return list(tokenizer(text=row.prompt)["input_ids"])


def seeds(base: int, line: int, n: int) -> list[int]:
    return [base + n * (line - 1) + i for i in range(n)]


@dataclass
class Sample:
    """One completion: its text, its token ids and why it ended, under its seed."""

    index: int
    seed: int
    text: str
    token_ids: list[int]
    finish_reason: str


def generate_groups(loaded: Any, rows: list[PromptRow], plan: Any, *, n: int, base_seed: int,
                    window: int) -> Iterator[tuple[PromptRow, list[int], list[Sample]]]:  # fmt: skip
    """Each prompt's group in file order. Up to `window` prompts' completions are in the scheduler's batch at
    once: while the first prompt's group finishes, the next ones already decode."""
    from llmcli.engine.batch.scheduler import Scheduler, SchedulerSettings
    from llmcli.engine.generate.generation import Finished, stream_generate

    scheduler = Scheduler(SchedulerSettings())
    pending: deque[tuple[PromptRow, list[int], list[Any]]] = deque()
    todo = iter(rows)

    def start(row: PromptRow) -> None:
        ids = prompt_ids(loaded.tokenizer, row)
        streams = [stream_generate(loaded, [_shown(row)], replace(plan, seed=s), encoded=[ids], scheduler=scheduler)
                   for s in seeds(base_seed, row.line, n)]  # fmt: skip
        pending.append((row, ids, streams))

    for row in todo:
        start(row)
        if len(pending) >= window:
            break
    try:
        while pending:
            row, ids, streams = pending.popleft()
            samples = []
            for index, (stream, seed) in enumerate(zip(streams, seeds(base_seed, row.line, n), strict=True)):
                with stream:
                    result = next(e for e in stream if isinstance(e, Finished)).results[0]
                out = result.outputs[0]
                samples.append(Sample(index, seed, out.text, list(out.token_ids), out.finish_reason))
            following = next(todo, None)
            if following is not None:
                start(following)
            yield row, ids, samples
    finally:  # a run that stops early (an error, Ctrl-C) takes its queued completions out of the batch
        for _, _, streams in pending:
            for stream in streams:
                stream.__exit__(None, None, None)


def remote_groups(send: Callable[[PromptRow, int], dict[str, Any]], rows: list[PromptRow], *, n: int, base_seed: int,
                  window: int) -> Iterator[tuple[PromptRow, list[int], list[Sample]]]:  # fmt: skip
    """The same groups from a server: `send(row, seed)` asks it for one completion of the row under `seed` and
    gives back its generate record; a prompt's n requests, and up to `window` prompts, are in flight at once
    (the server batches them)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, window) * n) as pool:
        futures: deque[tuple[PromptRow, list[Any]]] = deque()
        todo = iter(rows)

        def submit(row: PromptRow) -> None:
            futures.append((row, [pool.submit(send, row, seed) for seed in seeds(base_seed, row.line, n)]))

        for row in todo:
            submit(row)
            if len(futures) >= window:
                break
        while futures:
            row, asked = futures.popleft()
            records = [future.result() for future in asked]
            following = next(todo, None)
            if following is not None:
                submit(following)
            samples = []
            for index, (record, seed) in enumerate(zip(records, seeds(base_seed, row.line, n), strict=True)):
                out = record["outputs"][0]
                samples.append(Sample(index, seed, out["text"], list(out.get("token_ids") or []),
                                      out.get("finish_reason") or "stop"))  # fmt: skip
            yield row, list(records[0].get("prompt_token_ids") or []), samples


def _shown(row: PromptRow) -> str:
    return row.prompt if isinstance(row.prompt, str) else row.prompt[-1]["content"]


def completions_of(row: PromptRow, samples: list[Sample]) -> list[Any]:
    """The completions as TRL hands them to reward functions: text, or one assistant message for a conversation."""
    if row.conversational:
        return [[{"role": "assistant", "content": s.text}] for s in samples]
    return [s.text for s in samples]


# ---------------------------------------------------------------------------------------- rewards


def model_reward(reward_model: Any, row: PromptRow, samples: list[Sample]) -> list[float]:
    """A reward model's scores as GRPOTrainer computes them: prompt + completion as text (a conversation through
    the reward model's chat template), tokenized without special tokens, the head's logit."""
    from llmcli.analysis.reward import scores

    tokenizer = reward_model.tokenizer
    if row.conversational:
        texts = [tokenizer.apply_chat_template(row.prompt + c, tokenize=False) for c in completions_of(row, samples)]
    else:
        texts = [row.prompt + s.text for s in samples]
    ids = [list(tokenizer(text=t, add_special_tokens=False)["input_ids"]) for t in texts]
    return list(scores(reward_model, ids))


def logprob_reward(loaded: Any, ids: list[int], samples: list[Sample]) -> list[float | None]:
    """The policy's own mean log-probability of each completion's tokens (None for an empty completion)."""
    from llmcli.analysis.dpo import Model, completions
    from llmcli.analysis.pair_tokens import Tokenized

    policy = Model(loaded)
    scored = [(Tokenized(s.index, ids, s.token_ids, []), "chosen") for s in samples if s.token_ids]
    done = iter(completions(policy, policy, scored))
    out: list[float | None] = []
    for sample in samples:
        one = next(done) if sample.token_ids else None
        out.append(None if one is None else one.logps / one.tokens)
    return out


@dataclass
class Rewards:
    """The reward sources in order, with their weights: each a name and a function of (row, ids, samples)."""

    names: list[str]
    weights: list[float]
    funcs: list[Callable[[PromptRow, list[int], list[Sample]], list[float | None]]]

    def score(self, row: PromptRow, ids: list[int], samples: list[Sample]) -> list[list[float | None]]:
        return [func(row, ids, samples) for func in self.funcs]


def group_record(row: PromptRow, samples: list[Sample], per_func: list[list[float | None]], rewards: Rewards, *,
                 scale: str, batch_std: float | None = None) -> dict[str, Any]:  # fmt: skip
    """One prompt's line of output: every completion with its rewards and advantage, and the group's figures."""
    from llmcli.analysis import groups

    total = groups.combine(per_func, rewards.weights, count=len(samples))
    summary = groups.group(total, scale=scale, batch_std=batch_std)
    completions = []
    for i, sample in enumerate(samples):
        named = {name: values[i] for name, values in zip(rewards.names, per_func, strict=True)}
        completions.append({"index": sample.index, "seed": sample.seed, "text": sample.text,
                            "tokens": len(sample.token_ids), "finish_reason": sample.finish_reason, "rewards": named,
                            "reward": _finite(total[i]), "advantage": summary.advantages[i]})  # fmt: skip
    return {"line": row.line, "prompt": row.prompt, "completions": completions, "mean": _finite(summary.mean),
            "std": _finite(summary.std), "zero_std": summary.zero_std}  # fmt: skip


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN → None (JSON has no NaN)
