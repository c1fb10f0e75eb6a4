"""The compiled decoding step as generate() calls it: built (or loaded from llmcli's home) on the first
decoding call it can take, then one call into the library a token. Calls it cannot take run the model's own
forward: more than one token or row, a cache with layers other than plain static ones, a mask or cache of
another dtype than the library was built for. A build that fails says so in one stderr line and leaves the
plain step for the rest of the process; a damaged kept library (hashes that do not match, or a library that
does not load or bind) is built again under `--compile`, else said once and the plain step decodes.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmcli.engine.step.store import (
    CONSTANTS,
    folder_of,
    held_kept,
    holds_weights,
    inputs_of,
    keep,
    kept,
    step_key,
    steps_dir,
    with_weights,
)

TAKEN = {"input_ids", "position_ids", "attention_mask", "cache", "logits_to_keep", "use_cache", "return_dict"}
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its CompiledStep, for the process
_ROW_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its step for many rows
ROWS = "many"  # the key's "rows" for a library traced with a dynamic row count


class CompiledStep:
    """One model's compiled step. `may_build`: whether a missing or damaged library is built here (`--compile`)
    or the plain step decodes instead (a run that only uses what is kept)."""

    def __init__(
        self, model: Any, key: dict[str, Any], *, source: str | None = None, scheme: str | None = None
    ) -> None:
        self.model, self.key = model, key
        self.rows = key.get("rows") == ROWS  # traced with a dynamic row count (serve's batch, engine.step.lone)
        # the model's directory and quantization ("int4 g32"), named in the manifest for `llmcli models` (the
        # key has them as the config's and tensors' hashes)
        self.source, self.scheme = source, scheme
        self.may_build = False
        self.runner: Any = None
        self.signature: list[str] | None = None
        self.failed: str | None = None
        self.how: str | None = None  # "built" or "loaded"
        self.ran = False  # since the last used()
        self.made: dict[str, Any] = {}  # the library's constants that are not the model's (see _load)
        self.checked: tuple[Path | None, str | None] | None = None  # store.kept()'s answer, once hashed

    def __call__(self, **inputs: Any) -> Any:
        flat = None if self.failed else self._flat(inputs)
        logits = None if flat is None else self.logits(flat, inputs)
        if logits is None:
            return self.model(**inputs)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return CausalLMOutputWithPast(logits=logits, cache=inputs["cache"])

    def logits(self, flat: list, inputs: dict[str, Any] | None = None) -> Any:
        """The library's logits for its inputs in its order (`flat`, of the dtypes in `signature`), or None: the
        plain step decodes. A library is built here only for generate()'s own call (`inputs`, under
        `may_build`); a caller without them (serve's lone row) only loads a kept one."""
        if self.failed or (self.runner is None and not self._ready(inputs)):
            return None
        (logits,) = self.runner.run(flat)
        self.ran = True
        return logits

    def _flat(self, inputs: dict[str, Any]) -> list | None:
        """The library's inputs, or None where this call is not one the library takes."""
        from transformers.cache_utils import StaticCache, StaticLayer

        if any(inputs.get(name) is not None for name in inputs.keys() - TAKEN) or inputs.get("logits_to_keep", 1) > 1:
            return None
        from llmcli.engine.step.export import masks_of

        ids, positions, cache = (inputs.get(n) for n in ("input_ids", "position_ids", "cache"))
        masks = masks_of(inputs.get("attention_mask"))
        if ids is None or positions is None or masks is None or type(cache) is not StaticCache:
            return None
        if ids.shape[1] != 1 or positions.shape != ids.shape or (ids.shape[0] != 1 and not self.rows):
            return None
        layers = cache.layers
        if not all(type(layer) is StaticLayer and layer.is_initialized for layer in layers):
            return None
        keys, tensors = masks
        named = zip(keys or [""], tensors, strict=True)
        signature = [
            str(ids.dtype),
            str(positions.dtype),
            *(f"{k} {t.dtype}" for k, t in named),
            str(layers[0].keys.dtype),
        ]
        if self.signature is not None and signature != self.signature:
            return None
        if any(t.shape[-1] != layers[0].keys.shape[2] for t in tensors):
            return None
        self.signature = signature
        return [ids, positions, *tensors, *(t for layer in layers for t in (layer.keys, layer.values,
                                                                            layer.cumulative_length))]  # fmt: skip

    def _ready(self, inputs: dict[str, Any] | None) -> bool:
        from llmcli.errors import squash
        from llmcli.output import stderr_text

        try:
            library, damaged = self.checked or kept(self.key)
            self.checked = None
            if library is not None and inputs_of(library) != self.signature:
                library, damaged = None, "it was built for inputs of other dtypes"
            if library is not None:
                try:
                    self.runner = self._load(library)
                    return True
                except Exception as exc:  # hashes that match a library this machine cannot load or bind
                    library, damaged = None, f"it does not load: {squash(exc)}"
            if damaged:
                stderr_text(f"the compiled decoding step in {folder_of(self.key)} is damaged ({damaged}); "
                            + ("building it again" if self.may_build else "decoding with the plain step"))  # fmt: skip
            if not self.may_build or inputs is None:
                self.failed = damaged or "none is kept"
                return False
            self.runner = self._load(self._build(inputs))
            return True
        except Exception as exc:  # export and inductor fail in many ways; none of them may cost a token
            self.failed = squash(exc)
            stderr_text(f"the decoding step could not be compiled ({self.failed}); decoding with the plain step")
            return False

    def _build(self, inputs: dict[str, Any]) -> Path:
        import tempfile

        from llmcli.engine.step.export import build
        from llmcli.modelfs.compile_cache import use_llmcli_cache
        from llmcli.output import stderr_text

        use_llmcli_cache()
        stderr_text("compiling the decoding step for this model, dtype and CPU (once: later runs load it from "
                    "llmcli's home)…")  # fmt: skip
        started = time.perf_counter()
        steps_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=steps_dir(), prefix=".build-") as scratch:
            built, constants = build(self.model, inputs, Path(scratch), holds_weights=holds_weights(self.key),
                                     attention=self.key["attention"], rows=self.rows)  # fmt: skip
            library = keep(self.key, built, constants=constants, seconds=time.perf_counter() - started,
                           inputs=self.signature or [], source=self.source, scheme=self.scheme)  # fmt: skip
        seconds = time.perf_counter() - started
        self.how = "built"
        stderr_text(f"compiled the decoding step in {seconds:.1f} s ({library.parent})")
        return library

    def _load(self, library: Path) -> Any:
        """The library's runner with the model's parameters and buffers bound to it where they are (a library
        that holds the weights has copied them out of its file: the file's pages are let go)."""
        import torch
        from safetensors.torch import load_file

        runner = torch._C._aoti.AOTIModelContainerRunnerCpu(str(library), 1)
        if holds_weights(self.key):
            from llmcli.engine.load.pages import drop_file_pages

            drop_file_pages(str(library))
        else:
            # inductor's own constants, by their graph names; held here, since the runner uses them where they are
            self.made = load_file(str(library.parent / CONSTANTS))
            tensors = {**dict(named_tensors(self.model)), **self.made}
            names = runner.get_constant_names_to_original_fqns()
            missing = sorted({fqn.removeprefix("model.") for fqn in names.values()} - tensors.keys())
            if missing:
                raise RuntimeError(f"the model has no tensor {missing[0]}")
            bound = {name: tensors[fqn.removeprefix("model.")] for name, fqn in names.items()}
            runner.update_constant_buffer(bound, False, True, True)
        self.how = self.how or "loaded"
        return runner

    def used(self) -> str | None:
        """How the calls since the last used() were decoded: "built" (this call built the library), "loaded"
        or None (the plain step)."""
        how = self.how if self.ran else None
        self.ran = False
        if how == "built":
            self.how = "loaded"
        return how


def named_tensors(model: Any) -> list[tuple[str, Any]]:
    """Every parameter and buffer under each of its names (a tied weight under both)."""
    return [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]


def usable(loaded: Any, step: CompiledStep | None = None) -> bool:
    """Whether a good library is kept for this model (a run that did not ask for `--compile` uses it then); a
    damaged one is said on stderr, once a process. `step`: that step's library (default: the one-row step's)."""
    step = step or step_for(loaded)
    if step.failed:
        return False
    step.checked = library, damaged = kept(step.key)  # _ready() takes this answer instead of hashing again
    if damaged:
        from llmcli.output import stderr_text

        step.failed = damaged
        stderr_text(f"the compiled decoding step in {folder_of(step.key)} is damaged ({damaged}); decoding with the "
                    "plain step (--compile builds it again)")  # fmt: skip
    return library is not None


def step_for(loaded: Any, *, building: bool = False) -> CompiledStep:
    """The loaded model's compiled step (one a process, its library shared by every call). Its library holds
    the weights where engine.step.variant allows it and one is to be built (`building`) or is kept."""
    from llmcli.engine.step.variant import may_hold

    model = loaded.model
    step = _STEPS.get(model)
    if step is None or (building and not holds_weights(step.key) and may_hold(loaded)):
        _STEPS[model] = step = CompiledStep(model, _key(loaded, building=building), **_named(loaded))
    return step


def rows_step_for(loaded: Any, *, building: bool = False) -> CompiledStep:
    """The loaded model's step for a batch of rows (serve's, engine.step.lone): a library of its own, traced with
    a dynamic row count, holding the weights as step_for's does."""
    from llmcli.engine.step.variant import may_hold

    model = loaded.model
    step = _ROW_STEPS.get(model)
    if step is None or (building and not holds_weights(step.key) and may_hold(loaded)):
        key = _key(loaded, building=building, rows=True)
        _ROW_STEPS[model] = step = CompiledStep(model, key, **_named(loaded))
    return step


def _named(loaded: Any) -> dict[str, str | None]:
    """What the manifest names for `llmcli models`: the model's directory and its quantization scheme."""
    described = loaded.quantization or {}
    scheme = None if loaded.quantize == "none" else loaded.quantize
    if scheme and described.get("group_size"):
        scheme = f"{scheme} g{described['group_size']}"
    return {"source": str(loaded.source.path), "scheme": scheme}


def _key(loaded: Any, *, building: bool, rows: bool = False) -> dict[str, Any]:
    from llmcli.engine.load.environment import cpu
    from llmcli.engine.step.variant import may_hold, weights_digest

    tensors = [f"{name} {tuple(t.shape)} {t.dtype}" for name, t in named_tensors(loaded.model)]
    key = step_key(loaded.config, tensors=tensors, attn=loaded.attn, cpu=cpu())
    key = {**key, "rows": ROWS} if rows else key
    return with_weights(key, weights_digest(loaded)) if may_hold(loaded) and (building or held_kept(key)) else key


@contextmanager
def installed(model: Any, step: CompiledStep, compile_config: Any) -> Iterator[None]:
    """generate() takes `step` as the model's compiled call for decoding (transformers' own hook: the call it
    keeps for `compile_config`)."""
    before = {
        name: model.__dict__[name] for name in ("_compiled_call", "_last_compile_config") if name in model.__dict__
    }
    model._compiled_call, model._last_compile_config = step, compile_config
    try:
        yield
    finally:
        for name in ("_compiled_call", "_last_compile_config"):
            model.__dict__.pop(name, None)
        model.__dict__.update(before)
