"""GRPO's view of a prompt's group of samples, computed as TRL 1.16's GRPOTrainer computes it: each completion's
rewards combined by the weights (a NaN-aware sum; a completion every reward function left out is NaN), the
group's mean and standard deviation (Bessel-corrected, NaN-aware), and each advantage `r − mean`, divided by
`std + 1e-4` under `scale_rewards` group (the group's std) or batch (the std of every reward of the run); none
leaves it unscaled. An unscorable completion's advantage is 0. Pure arithmetic, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EPSILON = 1e-4  # TRL's, added to the std before dividing


def combine(per_func: Sequence[Sequence[float | None]], weights: Sequence[float], *, count: int) -> list[float]:
    """Per completion (`count` of them), the weighted sum of its rewards (one sequence per reward function), NaN
    and None left out; NaN where every function left it out, or where there is no reward function."""
    if not per_func:
        return [math.nan] * count
    out = []
    for values in zip(*per_func, strict=True):
        present = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and not math.isnan(v)]
        out.append(sum(v * w for v, w in present) if present else math.nan)
    return out


def nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def nanstd(values: Sequence[float]) -> float:
    """The Bessel-corrected std of the values that are not NaN (NaN with fewer than two), as TRL's nanstd."""
    kept = [v for v in values if not math.isnan(v)]
    if len(kept) < 2:
        return math.nan
    mean = sum(kept) / len(kept)
    return math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))


@dataclass
class Group:
    mean: float
    std: float  # the group's own std (what frac_reward_zero_std looks at under group and none)
    advantages: list[float]
    zero_std: bool


def group(rewards: Sequence[float], *, scale: str, batch_std: float | None = None) -> Group:
    """One prompt's group: its mean, std, each advantage, and whether its spread is zero (no learning signal).
    Under `batch`, `batch_std` is the std of every reward of the run."""
    mean = nanmean(rewards)
    own = nanstd(rewards) if len(rewards) > 1 else 0.0
    divisor = batch_std if scale == "batch" else own
    advantages = []
    for reward in rewards:
        value = reward - mean
        if scale != "none":
            value = value / (divisor + EPSILON)
        advantages.append(0.0 if math.isnan(value) else value)
    zero = _isclose_zero(divisor if scale == "batch" else own)
    return Group(mean, own, advantages, zero)


def _isclose_zero(value: float) -> bool:
    return not math.isnan(value) and abs(value) <= 1e-8  # torch.isclose(x, 0)'s atol


def run_metrics(groups: list[dict[str, Any]], names: list[str], *, zero_std: list[bool]) -> dict[str, float]:
    """TRL's logged names over the run: `reward`, `reward_std`, `frac_reward_zero_std`, the completions'
    lengths and `clipped_ratio`, and each reward function's `rewards/NAME/mean` and `/std`."""
    completions = [c for g in groups for c in g["completions"]]
    rewards = [_nan(c["reward"]) for c in completions]
    lengths = [c["tokens"] for c in completions]
    out = {
        "reward": nanmean(rewards),
        "reward_std": nanstd(rewards),
        "frac_reward_zero_std": sum(zero_std) / len(zero_std),
        "completions/mean_length": sum(lengths) / len(lengths),
        "completions/min_length": float(min(lengths)),
        "completions/max_length": float(max(lengths)),
        "completions/clipped_ratio": sum(c["finish_reason"] == "length" for c in completions) / len(completions),
    }
    for name in names:
        values = [_nan(c["rewards"][name]) for c in completions]
        out[f"rewards/{name}/mean"] = nanmean(values)
        out[f"rewards/{name}/std"] = nanstd(values)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
