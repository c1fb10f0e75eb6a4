"""`llmcli sample`'s choices, checked before anything loads (pure: no torch, no model): what `--keep` keeps, the
advantages' scale, the SFT format and the `FILE.py:NAME` of a reward function."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmcli.errors import UsageError

SCALES = ("group", "batch", "none")  # TRL's scale_rewards
SFT_FORMATS = ("prompt-completion", "messages", "alpaca")


@dataclass(frozen=True)
class Keep:
    kind: str  # "best", "top" or "above"
    count: int = 1
    threshold: float = 0.0


def parse_keep(text: str, *, n: int) -> Keep:
    """`best`, `top-K` (K ≤ N) or `above=X`, checked before anything loads."""
    if text == "best":
        return Keep("best")
    if text.startswith("top-") and text[4:].isdigit():
        count = int(text[4:])
        if not 1 <= count <= n:
            raise UsageError(f"--keep {text}: K must be between 1 and -n ({n})")
        return Keep("top", count)
    if text.startswith("above="):
        try:
            return Keep("above", threshold=float(text[6:]))
        except ValueError:
            pass
    raise UsageError(f"--keep {text}: expected best, top-K or above=X")


def parse_spec(spec: str) -> tuple[Path, str]:
    """`FILE.py:NAME` as its path and name (a usage error otherwise)."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise UsageError(f"--reward-func {spec}: expected FILE.py:NAME")
    return Path(path), name
