"""serve's lone row through the kept compiled step. While a batch holds one row, its step can be the one-row
library that generate() decodes with (engine.step.compiled) instead of the model's eager forward: the batch's
cache room (engine.batch.kv_room) goes to the library as a static cache's tensors (keys and values with spare
columns, the row's length) and the row's mask is laid over the whole room. Rows that join later find the room
filled as the eager step would have left it, so the batch carries on with the model's forward.

Only a library already kept is used (serve never compiles on its engine thread), and only one whose inputs are
one plain full-attention mask. Imports torch lazily; may import engine.step's other modules.
"""

from __future__ import annotations

from typing import Any

PLAIN_MASKS = ("", "full_attention")  # the library's mask inputs a lone row's mask stands for


class LoneStep:
    """The compiled step as serve's lone row calls it."""

    def __init__(self, step: Any, signature: list[str]) -> None:
        self.step, self.signature = step, signature
        self.masks = len(signature) - 3  # ids, positions, masks..., the cache's dtype

    def logits(self, ids: Any, positions: Any, mask: Any, rooms: list[tuple[Any, Any]], length: int) -> Any:
        """The row's logits ([1, 1, vocab]) for its token `ids` at `positions`, its keys and values written into
        column `length` of each layer's room; None where the library cannot take the step (the plain step
        decodes it). `mask`: the row's [1, length + 1] mask of 0/1."""
        import torch

        if self.step.signature not in (None, self.signature):
            return None
        self.step.signature = self.signature
        room = torch.zeros((1, 1, 1, rooms[0][0].shape[2]), dtype=torch.bool, device=mask.device)
        room[0, 0, 0, : mask.shape[1]] = mask[0].bool()
        flat = [ids, positions, *[room] * self.masks]
        for keys, values in rooms:
            flat += [keys, values, torch.tensor(length, device=keys.device)]
        return self.step.logits(flat)


def lone_step(loaded: Any) -> LoneStep | None:
    """The kept compiled step for this model's lone rows, or None: not on the CPU, none kept (or damaged), a
    library that binds weights the load reordered for oneDNN, or one whose inputs a lone row cannot give."""
    if loaded.device != "cpu":
        return None
    from llmcli.engine.step.compiled import step_for, usable
    from llmcli.engine.step.store import holds_weights, inputs_of

    step = step_for(loaded)
    if (loaded.prepacked and not holds_weights(step.key)) or not usable(loaded):
        return None
    signature = inputs_of(step.checked[0])
    return LoneStep(step, signature) if _takes(signature, str(loaded.model.dtype)) else None


def _takes(signature: list[str], dtype: str) -> bool:
    """Whether a library of these inputs takes a lone row's: int64 ids and positions, bool masks each of a kind
    the row's one mask stands for, and a cache of the model's dtype."""
    if len(signature) < 4 or signature[:2] != ["torch.int64", "torch.int64"] or signature[-1] != dtype:
        return False
    masks = [entry.rpartition(" ") for entry in signature[2:-1]]
    return all(kind in PLAIN_MASKS and kind_dtype == "torch.bool" for kind, _, kind_dtype in masks)
