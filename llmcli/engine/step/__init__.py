"""A decoding step compiled ahead of time: one row's forward through a static cache, exported with
torch.export and compiled by AOTInductor into a shared library kept in llmcli's home, so that a later process
loads it in milliseconds instead of tracing and compiling again (issue 38, item 1).

generate() keeps its loop, logits processors, stopping criteria and seeds: the compiled step is handed to it
as the model's compiled call (the hook transformers' own `--compile` path uses), and every call it cannot take
(more than one row, a mask or cache of another kind) runs the model's own forward. The library either binds
the model's parameters and buffers at load, where they are, or (a small bfloat16 model) holds its own copy
of the weights, reordered for oneDNN (variant).

- store: the key (model config, dtype, quantization, CPU, torch and transformers), the folder and its
  manifest, a damaged or foreign entry told apart from a good one.
- export: the step traced and compiled into a folder (once per key).
- compiled: the step as generate() calls it, built or loaded on its first decoding call.
- variant: whether the library holds the weights (frozen, prepacked, products joined) or binds them at load.
- lone: the step as serve's lone row calls it, over the batch's cache room.
- offer: `--compile` offered once where a kept library would pay.

Imports torch and transformers lazily; may import modelfs, engine.load (environment, pages, cpu_attention),
errors and the output layer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any


def ahead_of_time(loaded: Any, call: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """generate()'s kwargs and the compiled step for this call (None: the plain step, or on a GPU or for a
    batch transformers' own compiled call). On the CPU for one row: `--compile` builds the step where none is
    kept; without the flag a kept one is used (the static cache and the compile config added here); never
    with `--no-compile`, where the user chose another cache, or where the load measured oneDNN's products faster
    and the library would bind the model's weights (engine.load.prepack; `--compile` loads without them; a
    library that holds the weights has its own oneDNN copies, engine.step.variant)."""
    rows = len(call.encoded) * call.beams * (kwargs.get("num_return_sequences") or 1)
    if call.plain_step or loaded.device != "cpu" or rows != 1:
        return kwargs, None
    from llmcli.engine.step.compiled import step_for, usable
    from llmcli.engine.step.store import holds_weights

    asked = kwargs.get("compile_config") is not None
    step = step_for(loaded, building=asked)
    held = holds_weights(step.key)
    if not (asked or held):
        _offer(loaded, kwargs)
    if loaded.prepacked and not held:  # oneDNN's weights: not bound
        return kwargs, None
    if not asked:
        if kwargs.get("cache_implementation") not in (None, "static") or not usable(loaded):
            return kwargs, None
        from llmcli.genargs import for_generate

        kwargs = for_generate({**kwargs, "cache_implementation": "static", "compile_config": {}})
    step.may_build = asked
    if asked:
        step.failed = None  # --compile tries again what a run without it gave up on
    return kwargs, step


def _offer(loaded: Any, kwargs: dict[str, Any]) -> None:
    """The offer of `--compile` (engine.step.offer), where a kept library measured faster (engine.step.variant)."""
    from llmcli.engine.step.variant import kind, pays

    if not pays(loaded):
        return
    from llmcli.engine.step.offer import offer

    tokens = kwargs.get("max_new_tokens") or getattr(loaded.model.generation_config, "max_new_tokens", None)
    line = offer(loaded.source.path, dtype=kind(loaded), tokens=tokens)
    if line:
        from llmcli.output import warn

        warn(line)


def installed_for(loaded: Any, step: Any, kwargs: dict[str, Any]) -> AbstractContextManager:
    """Around the generate() call: `step` as the model's compiled call (nothing when there is none)."""
    if step is None:
        return nullcontext()
    from llmcli.engine.step.compiled import installed

    return installed(loaded.model, step, kwargs["compile_config"])
