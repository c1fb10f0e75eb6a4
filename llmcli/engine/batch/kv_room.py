"""A cache layer for serve's batch: transformers' DynamicLayer, with room for the columns still to come.

DynamicLayer appends a step's keys and values with torch.cat, copying the whole cache every step (a fifth of
a step at 8 rows of a few hundred tokens on CPU). This layer writes each step's column into spare room and
hands attention a view of the filled part; when the room is full, or the batch replaced the tensors (rows
joined or left), it takes new room with ROOM more columns. A lone row's step through the compiled library
(engine.step.lone) writes its column into the same room.
"""

from __future__ import annotations

from functools import cache
from typing import Any

ROOM = 256  # spare columns per reallocation: one copy of the cache every ROOM steps


def roomy_cache(model: Any) -> Any:
    """A DynamicCache for `model` whose layers are RoomyLayers (its layers must be plain DynamicLayers)."""
    from transformers.cache_utils import DynamicCache

    kv = DynamicCache(config=model.config)
    kv.layers = [_roomy_layer()() for _ in kv.layers]
    return kv


@cache
def _roomy_layer() -> type:
    """The layer class, made once transformers is imported."""
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        room: tuple[Any, Any] | None = None  # keys, values

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            length = self.keys.shape[-2] if self.keys.dim() == 4 else 0
            end = length + key_states.shape[-2]
            keys, values = self.reserve(end, key_states, value_states)
            keys[:, :, length:end] = key_states
            values[:, :, length:end] = value_states
            return self.filled(end)

        def reserve(self, end: int, keys_like: Any = None, values_like: Any = None) -> tuple[Any, Any]:
            """The layer's room (keys, values: [rows, heads, columns, dim]), taken afresh unless the current
            keys start it and it has `end` columns. Columns past the filled ones hold zeros, never garbage: the
            compiled step attends over the whole room, masked, and a masked NaN would still spoil a sum."""
            if not self._fits(end):
                keys_like = self.keys if keys_like is None else keys_like
                values_like = self.values if values_like is None else values_like
                self.room = (_room(self.keys, keys_like, end), _room(self.values, values_like, end))
            return self.room

        def filled(self, end: int) -> tuple[Any, Any]:
            """The first `end` columns of the room become the layer's keys and values."""
            keys, values = self.room
            self.keys, self.values = keys[:, :, :end], values[:, :, :end]
            return self.keys, self.values

        def _fits(self, end: int) -> bool:
            """Whether the current keys are the start of this layer's room, with room for `end` columns."""
            if self.room is None or self.keys.dim() != 4:
                return False
            room = self.room[0]
            same = self.keys.data_ptr() == room.data_ptr() and self.keys.shape[:2] == room.shape[:2]
            return same and self.values.data_ptr() == self.room[1].data_ptr() and end <= room.shape[-2]

    return RoomyLayer


def _room(old: Any, new: Any, end: int) -> Any:
    """Fresh room for `end` columns and ROOM more, holding `old` at its start."""
    batch, heads, _, dim = new.shape
    room = new.new_zeros(batch, heads, end + ROOM, dim)
    if old.dim() == 4 and old.shape[-2]:
        room[:, :, : old.shape[-2]] = old
    return room
