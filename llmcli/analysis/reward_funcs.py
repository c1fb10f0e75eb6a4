"""Reward functions as TRL's GRPOTrainer calls them, loaded from a file the user names (`FILE.py:NAME`):
`f(prompts, completions, completion_ids, **columns) -> list[float | None]`, the dataset's other columns passed
as keyword arguments, one value a completion. TRL's extra keyword arguments are given too (`trainer_state`
None; `log_extra` and `log_metric` take their values and drop them), so functions written for GRPO run unchanged.
None and NaN mean "no reward here": reported and left out of the statistics, as TRL leaves them.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, squash
from llmcli.sample_plan import parse_spec


@dataclass
class RewardFunc:
    name: str
    func: Callable[..., Any]
    path: Path


def load(spec: str) -> RewardFunc:
    """The function, from the file alone (never from an installed module of the same name); the file's own
    errors on import are reported as one line naming it."""
    path, name = parse_spec(spec)
    if not path.is_file():
        raise LlmcliError("no such reward function file", path=path)
    module_name = f"llmcli_reward_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise LlmcliError("cannot be loaded as Python", path=path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: any error is its own, named
        raise LlmcliError(f"fails on import: {type(exc).__name__}: {squash(exc)}", path=path) from None
    func = getattr(module, name, None)
    if not callable(func):
        raise LlmcliError(f"has no function named {name}", path=path)
    return RewardFunc(name, func, path)


def call(reward: RewardFunc, *, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]],
         columns: dict[str, list[Any]], where: str) -> list[float | None]:  # fmt: skip
    """The function's rewards for one group, checked: one number (or None) a completion. `where` names the
    prompt in errors."""
    try:
        values = reward.func(prompts=prompts, completions=completions, completion_ids=completion_ids,
                             trainer_state=None, log_extra=_ignore, log_metric=_ignore, **columns)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the user's code: its error, with the prompt it failed on
        raise LlmcliError(f"reward function {reward.name} raised {type(exc).__name__} on {where}: {squash(exc)}",
                          path=reward.path) from None  # fmt: skip
    if not isinstance(values, list | tuple) or len(values) != len(completions):
        got = len(values) if isinstance(values, list | tuple) else type(values).__name__
        raise LlmcliError(f"reward function {reward.name} returned {got} values for {len(completions)} completions "
                          f"on {where}", path=reward.path)  # fmt: skip
    out: list[float | None] = []
    for value in values:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise LlmcliError(f"reward function {reward.name} returned {value!r} on {where}: rewards are numbers "
                              "or None", path=reward.path)  # fmt: skip
        out.append(None if value is None or math.isnan(value) else float(value))
    return out


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None
