"""Sequences scored in forward passes of bounded size (dpo's pairs, kto's rows, a reward model's texts): grouped
in file order under a token budget, and right-padded beside their attention mask. Torch only inside functions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def budget_batches(items: list[Any], length: Callable[[Any], int], budget: int) -> Iterator[list[Any]]:
    """The items in order, grouped so that a batch's longest length times its count (what its padded pass holds)
    stays within `budget`; an item over the budget alone is a batch of its own."""
    batch: list[Any] = []
    widest = 0
    for item in items:
        size = length(item)
        if batch and max(widest, size) * (len(batch) + 1) > budget:
            yield batch
            batch, widest = [], 0
        batch.append(item)
        widest = max(widest, size)
    if batch:
        yield batch


def right_padded(ids: list[list[int]], pad: int, device: Any) -> tuple[Any, Any]:
    """The sequences as one right-padded tensor of token ids and its attention mask, on `device`."""
    import torch

    width = max(len(i) for i in ids)
    tokens = torch.tensor([i + [pad] * (width - len(i)) for i in ids], device=device)
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids], device=device)
    return tokens, mask
