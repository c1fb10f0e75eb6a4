"""A batch of rows decoded one forward pass per step, over the model's own forward and transformers'
DynamicCache; rows join after their prefill and leave when done, at any step.

The cache is left-padded: every row's keys and values end at the same column, the attention mask hides each
row's padding, and position ids count each row's own tokens, so a row computes what it would compute alone
(float32 on CPU gives the same tokens; other dtypes round differently for other batch shapes). Rows that
arrive together are prefilled together, their cache padded to the batch's width and stacked under the
others; a row that leaves is cut out, and columns that became padding in every row are dropped. A row alone
in its batch may step through the kept compiled library instead, and more rows through one traced with a
dynamic row count (engine.step.lone).
"""

from __future__ import annotations

from typing import Any

from llmcli.engine.batch.rows import Row
from llmcli.engine.step.export import MAX_ROWS

# rows up to which a batch steps through the library for rows (more: the model's forward): its bound. The default
# model in bfloat16, serve's step in-process at 12 / 16 / 32 / 64 rows: 24 / 29 / 44 / 75 ms through it against
# 40 / 45 / 61 / 95 on oneDNN eager (AMD EPYC VM, avx512_bf16; docs/performance.md)
LIBRARY_ROWS = MAX_ROWS


def cache_mergeable(model: Any) -> bool:
    """Whether the model's cache is plain full-attention layers, which this batch can pad, stack and cut
    (sliding-window, hybrid and recurrent caches keep to generate())."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - a config DynamicCache cannot follow: not mergeable
        return False
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class Batch:
    """The rows decoding together, their cache and attention mask."""

    def __init__(self, model: Any, device: Any, *, lone: Any = None, many: Any = None):
        self.model, self.device = model, device
        self.lone = lone  # engine.step.lone's LoneStep: a lone row's step through the kept compiled library
        self.many = many  # the same for 2 to LIBRARY_ROWS rows, through the library traced for many rows
        self.wide = wide_cache_dtype(model)  # the cache's dtype while rows step on the model's forward
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: Any = None  # [rows, width] of 0/1
        self.cache_name: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    def _last_logits(self, ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        """The model's forward over `ids` into `cache`: each row's float32 logits at its last position."""
        import torch

        if self.cache_name is None:  # transformers 5 renamed forward()'s `past_key_values` to `cache`
            import inspect

            params = inspect.signature(self.model.forward).parameters
            self.cache_name = "cache" if "cache" in params else "past_key_values"
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **{self.cache_name: cache},
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].to(dtype=torch.float32, copy=True)

    def admit(self, rows: list[Row]) -> list[Row]:
        """The rows' prompts through the model together (left-padded), their first tokens chosen, and the rows
        added to the batch; those already done (an end-of-text first) are returned."""
        import torch

        from llmcli.engine.batch.kv_room import roomy_cache

        width = max(len(r.prompt) for r in rows)
        pads = [width - len(r.prompt) for r in rows]
        ids = torch.tensor([[0] * pad + r.prompt for pad, r in zip(pads, rows, strict=True)], device=self.device)
        mask = torch.tensor([[0] * pad + [1] * len(r.prompt) for pad, r in zip(pads, rows, strict=True)])
        mask = mask.to(self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = roomy_cache(self.model)
        logits = self._last_logits(ids, mask, positions, cache)
        count = len(self.rows) + len(rows)
        for row, token in zip(rows, choose_all(rows, logits), strict=True):
            row.accept(token, count)
        keep = [i for i, r in enumerate(rows) if r.finish is None]
        if keep:
            index = torch.tensor(keep, device=self.device)
            _select_rows(cache, index, start=0)
            self._stack([rows[i] for i in keep], cache, mask.index_select(0, index))
        return [r for r in rows if r.finish is not None]

    def _stack(self, rows: list[Row], cache: Any, mask: Any) -> None:
        import torch

        if not self.rows:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        width = max(self.width, int(mask.shape[1]))
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            keys, values = theirs.keys.to(mine.keys.dtype), theirs.values.to(mine.values.dtype)
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(mask, width)])
        self.rows.extend(rows)

    def step(self) -> list[Row]:
        """One forward pass for every row on its latest token; the rows that finished leave (returned)."""
        import torch

        last = torch.tensor([[r.generated[-1]] for r in self.rows], device=self.device)
        positions = torch.tensor([[r.length - 1] for r in self.rows], device=self.device)
        self.mask = torch.cat([self.mask, torch.ones_like(last)], dim=1)
        logits = self._compiled_logits(last, positions)
        if logits is None:
            _cache_to(self.cache, self.wide)
            logits = self._last_logits(last, self.mask, positions, self.cache)
        count = len(self.rows)
        for row, token in zip(self.rows, choose_all(self.rows, logits), strict=True):
            row.accept(token, count)
        return self.drop([r for r in self.rows if r.finish is not None])

    def _compiled_logits(self, ids: Any, positions: Any) -> Any:
        """The rows' float32 logits from a kept compiled library (one row: lone; more: many), their keys and
        values written into the cache's room as the model's forward would have; None where no library takes
        the step."""
        import torch

        from llmcli.engine.batch.kv_room import LONE_ROOM

        kind = "lone" if len(self.rows) == 1 else "many" if len(self.rows) <= LIBRARY_ROWS else None
        library = getattr(self, kind) if kind else None
        if library is None:
            return None
        end = self.width  # the new token's column is the last
        _cache_to(self.cache, self.model.dtype)  # the library's cache is the model's dtype
        rooms = [layer.reserve(end, spare=LONE_ROOM) for layer in self.cache.layers]
        logits = library.logits(ids, positions, self.mask, rooms, end - 1)
        if logits is None:  # the library cannot take this model's steps: not asked again for this batch
            setattr(self, kind, None)
            return None
        for layer in self.cache.layers:
            layer.filled(end)
        for row in self.rows:
            row.stats.compiled += 1
        return logits[:, -1].to(dtype=torch.float32, copy=True)

    def drop(self, leaving: list[Row]) -> list[Row]:
        """The given rows cut out of the batch (finished, or their client gone)."""
        if not leaving:
            return []
        keep = [i for i, r in enumerate(self.rows) if r not in leaving]
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache = self.mask = None
            return leaving
        import torch

        index = torch.tensor(keep, device=self.device)
        self.mask = self.mask.index_select(0, index)
        # Columns that are padding in every remaining row carry nothing: cut them off the left.
        start = int(self.mask.any(dim=0).int().argmax())
        self.mask = self.mask[:, start:]
        _select_rows(self.cache, index, start=start)
        return leaving


def choose_all(rows: list[Row], logits: Any) -> list[int]:
    """Each row's next token from its line of `logits`, one row after another on the engine thread.

    The rows once chose on threads of their own, two at a time (a sampling row's top-p sort and draw run on one
    core). Each of those threads kept an OpenMP team of its own, in the engine's way: on the 2-core AMD EPYC
    (avx512_bf16, default model) 16 sampling rows decoded at 154 tok/s that way against 215 one after another,
    32 greedy rows at 251-313 against 516, and a lone request after such a burst at half its speed for the
    rest of the process (18 against 37 tok/s; docs/performance.md)."""
    return [row.choose(logits[i]) for i, row in enumerate(rows)]


def wide_cache_dtype(model: Any) -> Any:
    """float32 for a model whose decoding attention upcasts to it (engine.load.cpu_attention: bfloat16 or
    float16 on the CPU), so that the batch's cache is not copied to float32 in every layer of every step (16
    rows of 150 tokens, default model: 38.3-39.4 against 39.9-41.8 ms a step; the copies grow with the
    context); else None, the model's own dtype. bfloat16 values are exact in float32: the batch computes what
    it computed before."""
    from llmcli.engine.load.cpu_attention import NAME

    if getattr(model.config, "_attn_implementation", None) != NAME:
        return None
    import torch

    return torch.float32


def _cache_to(cache: Any, dtype: Any) -> None:
    """Every layer's keys and values in `dtype` (None: as they are); a changed layer takes new room at its next
    write."""
    if dtype is None or cache.layers[0].keys.dtype == dtype:
        return
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys.to(dtype), layer.values.to(dtype)


def _select_rows(cache: Any, index: Any, *, start: int) -> None:
    """The cache keeps only the rows in `index`, from column `start` on."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)[:, :, start:]
        layer.values = layer.values.index_select(0, index)[:, :, start:]


def _left_pad(tensor: Any, width: int) -> Any:
    """Zeros on the left of the sequence axis (the last for a mask, the one before it for keys and values)."""
    import torch

    axis = -1 if tensor.dim() == 2 else -2
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
