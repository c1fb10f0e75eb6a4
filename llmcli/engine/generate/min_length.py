"""transformers' two minimum-length logits processors with their end-of-text mask made once.

`MinLengthLogitsProcessor` and `MinNewTokensLengthLogitsProcessor` build a mask over the whole vocabulary
(`torch.isin(arange(vocab), eos)`) on every call, whether or not they then use it: 0.16 ms a call for the
default model's 49,152 ids on the project's AMD EPYC machine, 2.6 ms of a 30 ms step of serve's batch at
16 rows asked for `ignore_eos` (each such row carries `min_new_tokens`). These subclasses keep the mask
from their first call and compute what the originals compute. Imports torch and transformers lazily.
"""

from __future__ import annotations

from functools import cache
from typing import Any


def with_kept_masks(processors: Any) -> Any:
    """The same processors (a LogitsProcessorList), each minimum-length one switched to its subclass below (the
    object keeps its settings; only its class changes)."""
    kept = _kept_classes()
    for processor in processors:
        if type(processor) in kept:
            processor.__class__ = kept[type(processor)]
    return processors


@cache
def _kept_classes() -> dict[type, type]:
    import math

    import torch
    from transformers.generation.logits_process import (
        MinLengthLogitsProcessor,
        MinNewTokensLengthLogitsProcessor,
    )

    class KeptMask:
        eos_token_id: Any
        _mask: Any = None

        def eos_mask(self, scores: Any) -> Any:
            mask = self._mask
            if mask is None or mask.shape[-1] != scores.shape[-1] or mask.device != scores.device:
                vocab = torch.arange(scores.shape[-1], device=scores.device)
                self._mask = mask = torch.isin(vocab, self.eos_token_id)
            return mask

    class MinLength(KeptMask, MinLengthLogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if input_ids.shape[-1] < self.min_length:
                return torch.where(self.eos_mask(scores), -math.inf, scores)
            return scores.clone()

    class MinNewTokens(KeptMask, MinNewTokensLengthLogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if input_ids.shape[-1] - self.prompt_length_to_skip < self.min_new_tokens:
                return torch.where(self.eos_mask(scores), -math.inf, scores)
            return scores.clone()

    return {MinLengthLogitsProcessor: MinLength, MinNewTokensLengthLogitsProcessor: MinNewTokens}
