"""serve's rows through kept compiled steps. While a batch holds one row, its step can be the one-row library
that generate() decodes with (engine.step.compiled) instead of the model's eager forward; while it holds more,
a library of its own traced with a dynamic row count (built by `serve --compile`: server.compiled_step). The batch's
cache room (engine.batch.kv_room) goes to the library as a static cache's tensors (keys and values with spare
columns, the rows' common length) and each row's mask is laid over the whole room. Rows that join later find
the room filled as the eager step would have left it, so the batch carries on with whichever step fits.

Only a library already kept is used (serve never compiles on its engine thread while it serves), and only one
whose inputs are one plain full-attention mask. Imports torch lazily; may import engine.step's other modules.
"""

from __future__ import annotations

from typing import Any

PLAIN_MASKS = ("", "full_attention")  # the library's mask inputs a lone row's mask stands for


class LoneStep:
    """A compiled step as serve's batch calls it (one row, or more on a library built for rows)."""

    def __init__(self, step: Any, signature: list[str]) -> None:
        self.step, self.signature = step, signature
        self.masks = len(signature) - 3  # ids, positions, masks..., the cache's dtype

    def logits(self, ids: Any, positions: Any, mask: Any, rooms: list[tuple[Any, Any]], length: int) -> Any:
        """The rows' logits ([rows, 1, vocab]) for their tokens `ids` at `positions`, their keys and values
        written into column `length` of each layer's room; None where the library cannot take the step (the
        plain step decodes it). `mask`: the rows' [rows, length + 1] mask of 0/1."""
        import torch

        if self.step.signature not in (None, self.signature):
            return None
        self.step.signature = self.signature
        room = torch.zeros((mask.shape[0], 1, 1, rooms[0][0].shape[2]), dtype=torch.bool, device=mask.device)
        room[:, 0, 0, : mask.shape[1]] = mask.bool()
        flat = [ids, positions, *[room] * self.masks]
        for keys, values in rooms:
            flat += [keys, values, torch.tensor(length, device=keys.device)]
        return self.step.logits(flat)


def lone_step(loaded: Any) -> LoneStep | None:
    """The kept compiled step for this model's lone rows, or None: not on the CPU, none kept (or damaged), a
    library that binds weights the load reordered for oneDNN, or one whose inputs a lone row cannot give."""
    if loaded.device != "cpu":
        return None
    from llmcli.engine.step.compiled import step_for

    return _kept_step(loaded, step_for(loaded))


def rows_step(loaded: Any) -> LoneStep | None:
    """The kept compiled step for several rows of this model's batch (a library traced with a dynamic row count),
    or None, as lone_step."""
    if loaded.device != "cpu":
        return None
    from llmcli.engine.step.compiled import rows_step_for

    return _kept_step(loaded, rows_step_for(loaded))


def _kept_step(loaded: Any, step: Any) -> LoneStep | None:
    from llmcli.engine.step.compiled import usable
    from llmcli.engine.step.store import holds_weights, inputs_of

    if (loaded.prepacked and not holds_weights(step.key)) or not usable(loaded, step):
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
