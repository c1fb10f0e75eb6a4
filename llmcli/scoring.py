"""Scoring a text, the pure part: the score record's figures from per-token log-probabilities, and strided
windows over a text longer than the context (transformers' perplexity guide): windows of W tokens start every
S tokens; each scores only the tokens the previous one did not, with everything before them in the window as
context. The text's first token is context only; every other token is scored exactly once. No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llmcli.errors import UsageError


@dataclass(frozen=True)
class Window:
    begin: int  # the window's tokens are ids[begin:end]
    end: int
    first: int  # the first position it scores; it scores first..end-1

    @property
    def scored(self) -> int:
        return self.end - self.first


def check_window(window: int | None, stride: int | None, *, context: int | None) -> None:
    """--window/--stride before anything loads: a stride of 0 or past the window, a window past the context."""
    if window is not None and window < 2:
        raise UsageError(f"--window {window}: a window needs at least 2 tokens")
    if window is not None and context and window > context:
        raise UsageError(f"--window {window} is larger than the model's context ({context:,} tokens)")
    if stride is not None and stride < 1:
        raise UsageError(f"--stride {stride}: the stride must be at least 1")
    if stride is not None and window is not None and stride > window:
        raise UsageError(f"--stride {stride} is larger than --window {window}: tokens between windows go unscored")


def check_scorable(token_ids: Any) -> None:
    if len(token_ids) < 2:
        raise UsageError("scoring needs at least two tokens (the first one has nothing to be predicted from)")


def plan_windows(count: int, window: int, stride: int) -> list[Window]:
    check_scorable(range(count))
    windows: list[Window] = []
    scored_to = 1  # position 0 is context only
    for begin in range(0, count, stride):
        end = min(begin + window, count)
        if end > scored_to:
            windows.append(Window(begin, end, scored_to))
            scored_to = end
        if end == count:
            break
    return windows


@dataclass
class NllSummary:
    scored_tokens: int
    mean_nll: float
    stderr: float  # the standard error of the mean NLL
    perplexity: float
    perplexity_stderr: float  # carried through exp by the delta method: exp(mean) · stderr


def summarize(nlls: list[float]) -> NllSummary:
    count = len(nlls)
    mean = math.fsum(nlls) / count
    variance = math.fsum((x - mean) ** 2 for x in nlls) / (count - 1) if count > 1 else 0.0
    stderr = math.sqrt(variance / count)
    perplexity = math.exp(mean)
    return NllSummary(count, mean, stderr, perplexity, perplexity * stderr)


def score_data(tokens: list[dict[str, Any]]) -> dict[str, Any]:
    """The score record from each token's {token_id, token, logprob} (the first one's logprob is None):
    totals, mean NLL and perplexity = exp(mean NLL), each with its standard error. Local and remote scores
    both end here."""
    values = [t["logprob"] for t in tokens[1:]]
    summary = summarize([-v for v in values])
    return {
        "token_ids": [t["token_id"] for t in tokens],
        "tokens": tokens,
        "scored_tokens": len(values),
        "total_logprob": sum(values),
        "mean_nll": summary.mean_nll,
        "mean_nll_stderr": summary.stderr,
        "perplexity": summary.perplexity,
        "perplexity_stderr": summary.perplexity_stderr,
    }


def window_figures(win: Window, logprobs: list[float]) -> dict[str, Any]:
    summary = summarize([-v for v in logprobs])
    return {"begin": win.begin, "end": win.end, "scored": win.scored, "mean_nll": summary.mean_nll,
            "perplexity": summary.perplexity}  # fmt: skip


def windowed_data(token_count: int, window: int, stride: int, logprobs: list[float], windows: list[dict]) -> dict:
    """The windowed score record's figures (local and remote): the text's, then each window's."""
    summary = summarize([-v for v in logprobs])
    return {
        "token_count": token_count,
        "scored_tokens": summary.scored_tokens,
        "total_logprob": math.fsum(logprobs),
        "mean_nll": summary.mean_nll,
        "mean_nll_stderr": summary.stderr,
        "perplexity": summary.perplexity,
        "perplexity_stderr": summary.perplexity_stderr,
        "window": window,
        "stride": stride,
        "windows": windows,
    }


FULL_LOGITS_BYTES_PER_VALUE = 2  # llama-perplexity's --kl-divergence-base file: every logit as 16 bits


def reference_data(path: Any, size: int, k: int, positions: int, vocab: int) -> dict[str, Any]:
    """What --save-ref reports: the file, its bytes per scored token beside a full-logit file's."""
    return {"path": str(path), "bytes": size, "k": k, "bytes_per_token": round(size / max(1, positions), 1),
            "full_logits_bytes_per_token": vocab * FULL_LOGITS_BYTES_PER_VALUE}  # fmt: skip
