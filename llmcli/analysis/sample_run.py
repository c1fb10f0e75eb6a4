"""A `llmcli sample` run: its rewards loaded (reward models, reward functions, the policy's own log-probability),
then every prompt's group generated, scored and summarised in file order, handed to the caller as each prompt
finishes (which writes it); under `scale_rewards` batch, whose std needs every reward of the run, the groups
are summarised once all are scored."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from llmcli.analysis import sampling
from llmcli.analysis.groups import nanstd

# Completions queued at once: the scheduler runs as many as its KV budget holds and the rest wait their turn.
# Measured (benchmarks/sample_speed.py, 16 prompts x 8, default model, float32): 64 in flight 118 tok/s, 128 in
# flight 217; more only queues.
ROWS_IN_FLIGHT = 256


@dataclass
class RewardSpec:
    models: list[str]  # --reward RM, or "logprob"
    funcs: list[str]  # --reward-func FILE.py:NAME
    weights: list[float] | None


def load_funcs(spec: RewardSpec) -> list[Any]:
    """The reward functions, read from their files before any model loads (a missing file or name is said
    first)."""
    from llmcli.analysis import reward_funcs

    return [reward_funcs.load(given) for given in spec.funcs]


def load_rewards(spec: RewardSpec, funcs: list[Any], *, policy: Any,
                 load_model: Callable[[str], Any]) -> sampling.Rewards:  # fmt: skip
    """The reward sources in order (--reward ones, then the --reward-func ones `load_funcs` read), each with its
    weight (default 1)."""
    names, scorers = [], []
    for given in spec.models:
        if given == "logprob":
            names.append("logprob")
            scorers.append(lambda row, ids, samples: sampling.logprob_reward(policy, ids, samples))
            continue
        model = load_model(given)
        names.append(model.source.path.name)
        scorers.append(lambda row, ids, samples, model=model: sampling.model_reward(model, row, samples))
    for func in funcs:
        names.append(func.name)
        scorers.append(_calling(func))
    weights = spec.weights if spec.weights is not None else [1.0] * len(names)
    return sampling.Rewards(names, weights, scorers)


def _calling(func: Any) -> Callable[..., list[float | None]]:
    from llmcli.analysis import reward_funcs

    def score(row: sampling.PromptRow, ids: list[int], samples: list[sampling.Sample]) -> list[float | None]:
        completions = sampling.completions_of(row, samples)
        columns = {k: [v] * len(samples) for k, v in row.columns.items()}
        return reward_funcs.call(func, prompts=[row.prompt] * len(samples), completions=completions,
                                 completion_ids=[s.token_ids for s in samples], columns=columns,
                                 where=f"the prompt on line {row.line}")  # fmt: skip

    return score


def run(engine: Any, rows: list[sampling.PromptRow], plan: Any, rewards: sampling.Rewards, *, n: int, seed: int,
        scale: str) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Each prompt's record, in file order, as it finishes (all at the end under `batch` scaling). `engine`: the
    loaded model, or a function sending a prompt to a server (sampling.remote_groups)."""
    window = max(1, math.ceil(ROWS_IN_FLIGHT / n))
    if callable(engine):
        groups = sampling.remote_groups(engine, rows, n=n, base_seed=seed, window=window)
    else:
        groups = sampling.generate_groups(engine, rows, plan, n=n, base_seed=seed, window=window)
    if scale != "batch":
        for row, ids, samples in groups:
            yield sampling.group_record(row, samples, rewards.score(row, ids, samples), rewards, scale=scale)
        return
    scored = [(row, samples, rewards.score(row, ids, samples)) for row, ids, samples in groups]
    from llmcli.analysis.groups import combine

    every = [r for _, samples, per_func in scored for r in combine(per_func, rewards.weights, count=len(samples))]
    batch_std = nanstd(every)
    for row, samples, per_func in scored:
        yield sampling.group_record(row, samples, per_func, rewards, scale=scale, batch_std=batch_std)
