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
# a lone row's spare columns when it steps through the compiled library, which attends over the whole room: at
# 256 the default model's lone step took 19.8 ms against 16.2 with one spare column (40 filled; 16.8 at 32;
# measured with the library's bfloat16 attention, before it was traced with the float32 one)
LONE_ROOM = 32


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

        def reserve(self, end: int, keys_like: Any = None, values_like: Any = None, *, spare: int = 0) -> tuple:
            """The layer's room (keys, values: [rows, heads, columns, dim]), taken afresh with `spare` more
            columns unless the current keys start it and it has `end` columns and at most `spare` more.
            Columns past the filled ones hold zeros, never garbage: the compiled step attends over the whole
            room, masked (so it asks for little spare room), and a masked NaN would still spoil a sum.
            `spare` 0: ROOM."""
            spare = spare or ROOM
            if not self._fits(end, spare):
                keys_like = self.keys if keys_like is None else keys_like
                values_like = self.values if values_like is None else values_like
                self.room = (_room(self.keys, keys_like, end + spare), _room(self.values, values_like, end + spare))
            return self.room

        def filled(self, end: int) -> tuple[Any, Any]:
            """The first `end` columns of the room become the layer's keys and values."""
            keys, values = self.room
            self.keys, self.values = keys[:, :, :end], values[:, :, :end]
            return self.keys, self.values

        def _fits(self, end: int, spare: int) -> bool:
            """Whether the current keys are the start of this layer's room, with room for `end` columns and at
            most `spare` more."""
            if self.room is None or self.keys.dim() != 4:
                return False
            room = self.room[0]
            same = self.keys.data_ptr() == room.data_ptr() and self.keys.shape[:2] == room.shape[:2]
            sized = end <= room.shape[-2] <= end + spare
            return same and self.values.data_ptr() == self.room[1].data_ptr() and sized

    return RoomyLayer


def _room(old: Any, new: Any, columns: int) -> Any:
    """Fresh room of `columns` columns, holding `old` at its start, of `old`'s dtype where it has one."""
    batch, heads, _, dim = new.shape
    held = old.dim() == 4
    room = new.new_zeros(batch, heads, columns, dim, dtype=old.dtype if held else new.dtype)
    if held and old.shape[-2]:
        room[:, :, : old.shape[-2]] = old
    return room
