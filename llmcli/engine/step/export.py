"""A model's one-row decoding step traced by torch.export and compiled by AOTInductor into a shared library.

The traced function takes what generate() hands a decoding call of one row through a static cache (the token,
its position, the 4-D mask transformers prepared, and each layer's keys, values and length), writes the
token's keys and values into the cache's tensors in place and returns the logits. The cache's length is a
dynamic dimension, so one library serves every prompt and generation length. The weights are left out of the
library (bound at load from the model itself) or frozen into it (engine.step.variant). Imports torch and
transformers lazily.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MAX_CACHE = 1 << 20  # the dynamic cache length's upper bound (any model's context fits)
MAX_ROWS = 256  # the dynamic row count's upper bound, in a library built for rows


def masks_of(mask: Any) -> tuple[list[str] | None, list[Any]] | None:
    """A call's attention mask as (its keys, its 4-D tensors): one tensor (None, [mask]), or the dict of one mask
    per attention kind that models with `layer_types` are given; None for anything else."""
    import torch

    if isinstance(mask, torch.Tensor):
        return (None, [mask]) if mask.dim() == 4 else None
    if isinstance(mask, dict) and mask and all(isinstance(k, str) for k in mask):
        keys = sorted(mask)
        tensors = [mask[k] for k in keys]
        return (keys, tensors) if all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in tensors) else None
    return None


def _step_module(model: Any, cache: Any, mask_keys: list[str] | None) -> Any:
    """The exported function, as a module over the model: the cache's tensors come in as inputs and are put
    into a cache of the same structure before the model's own forward runs."""
    import torch

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.cache = cache

        def forward(self, input_ids: Any, position_ids: Any, masks: list, layers: list) -> Any:
            attention_mask = masks[0] if mask_keys is None else dict(zip(mask_keys, masks, strict=True))
            for layer, (keys, values, length) in zip(self.cache.layers, layers, strict=True):
                layer.keys, layer.values, layer.cumulative_length = keys, values, length
                layer.max_cache_len = keys.shape[2]
            out = self.model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                             cache=self.cache, use_cache=True, logits_to_keep=1)  # fmt: skip
            return out.logits

    return Step()


def layer_tensors(cache: Any) -> list[tuple[Any, Any, Any]]:
    return [(layer.keys, layer.values, layer.cumulative_length) for layer in cache.layers]


@contextmanager
def _made_constants() -> Iterator[dict[str, Any]]:
    """The tensors inductor itself adds to the graph while it lowers (the int4 kernel's group size is one), by
    name: the library leaves them out with the weights, so they are kept beside it and bound at load."""
    from torch._inductor.graph import GraphLowering

    made: dict[str, Any] = {}
    add = GraphLowering.add_tensor_constant

    def recording(self: Any, data: Any, name: str | None = None) -> Any:
        box = add(self, data, name)
        if name is None:
            made[box.get_name()] = data.detach().clone()
        return box

    GraphLowering.add_tensor_constant = recording
    try:
        yield made
    finally:
        GraphLowering.add_tensor_constant = add


def build(model: Any, inputs: dict[str, Any], into: Path, *, holds_weights: bool, attention: str | None = None,
          rows: bool = False) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """Exports and compiles the step for `inputs` (a decoding call's keyword arguments); returns the library,
    written under `into`, and the constants inductor made for it (see `_made_constants`). `holds_weights`:
    the weights frozen into the library, prepacked for oneDNN and the products of one input joined
    (engine.step.variant); else left out, to be bound at load. `attention`: the implementation traced (the
    load's; generate() calls a static cache's step under plain SDPA, engine.generate.attention). `rows`: the
    row count a dynamic dimension too (serve's batch, engine.step.lone), from an example of two rows or more."""
    import copy

    import torch

    cache = inputs["cache"]
    own_cache = copy.copy(cache)
    own_cache.layers = [copy.copy(layer) for layer in cache.layers]  # the export rebinds these, not the caller's
    mask_keys, masks = masks_of(inputs["attention_mask"])
    step = _step_module(model, own_cache, mask_keys)
    layers = layer_tensors(cache)
    length = torch.export.Dim("cache_length", min=2, max=MAX_CACHE)
    batch = {0: torch.export.Dim("rows", min=1, max=MAX_ROWS)} if rows else {}
    cache = {**batch, 2: length}
    dynamic = (batch or None, batch or None, [{**batch, 3: length}] * len(masks), [(cache, cache, None)] * len(layers))
    example = (inputs["input_ids"], inputs["position_ids"], masks, layers)
    package = Path(tempfile.mkdtemp(dir=into)) / "step.pt2"
    configs = (
        {"freezing": True, "cpp.enable_concat_linear": True}
        if holds_weights
        else {"aot_inductor.package_constants_in_so": False}
    )
    with warnings.catch_warnings(), torch.no_grad(), _made_constants() as made, _traced_with(model, attention):
        warnings.simplefilter("ignore")  # transformers' code
        # non-strict export traces on fake copies: the caller's cache is not written
        program = torch.export.export(step, example, dynamic_shapes=dynamic, strict=False)
        torch._inductor.aoti_compile_and_package(program, package_path=str(package), inductor_configs=configs)
    return _library_of(package), made


@contextmanager
def _traced_with(model: Any, attention: str | None) -> Iterator[None]:
    """The model's attention switched to `attention` while it is traced, and back. A bfloat16 model loaded with
    engine.load.cpu_attention's float32 decoding step is traced with it: the CPU's bfloat16 flash attention is
    several times slower (one layer at 1,024 keys 484 against 52 us)."""
    current = getattr(model.config, "_attn_implementation", None)
    if attention is None or attention == current:
        yield
        return
    model.set_attn_implementation(attention)
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def _library_of(package: Path) -> Path:
    """The compiled library inside the package (a zip), extracted beside it."""
    import zipfile

    with zipfile.ZipFile(package) as archive:
        names = [n for n in archive.namelist() if n.endswith(".so") and "/aotinductor/" in n]
        if len(names) != 1:
            raise RuntimeError(f"the compiled package holds {len(names)} libraries, not one")
        target = package.parent / "step.so"
        target.write_bytes(archive.read(names[0]))
    return target
