"""OpenAI's frequency and presence penalties, which generate() has no setting for, as a logits processor.

As vLLM applies them: over the tokens generated so far (never the prompt's), before temperature and the
sampling filters, `logit[t] -= frequency_penalty × count(t) + presence_penalty × (count(t) > 0)`. The
processor learns where the output starts from its first call, which sees the prompt alone (generate()'s
padded prompt width, or a serve row's own prompt), so one object serves generate() and a batch row alike.
"""

from __future__ import annotations

from typing import Any

from llmcli.genargs import PROCESSOR_KEYS


class OutputPenalties:
    """A logits processor (transformers calls it as `processor(input_ids, scores)`)."""

    def __init__(self, *, frequency: float = 0.0, presence: float = 0.0):
        self.frequency, self.presence = frequency, presence
        self.start: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.start is None:
            self.start = input_ids.shape[1]
        output = input_ids[:, self.start :]
        if output.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, output, torch.ones_like(output, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


def split_penalties(kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """generate()'s own keyword arguments, and the processors that carry llmcli's settings (none when unset)."""
    rest = {k: v for k, v in kwargs.items() if k not in PROCESSOR_KEYS}
    frequency, presence = kwargs.get("frequency_penalty") or 0.0, kwargs.get("presence_penalty") or 0.0
    if not frequency and not presence:
        return rest, []
    return rest, [OutputPenalties(frequency=float(frequency), presence=float(presence))]
