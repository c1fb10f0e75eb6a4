"""Which library a model's decoding step is built as. One that holds the weights: inductor's `freezing` folds
them into the library as constants, reorders each linear weight for oneDNN there and joins the products that
read one input into one (q, k and v; gate and up: `cpp.enable_concat_linear`), so a step is 121 large calls
instead of 211 small ones (the default model in bfloat16: 82 tok/s against 65 with oneDNN eager). Or one
without them, the model's tensors bound to it at load (float32, quantized layers, adapters, big models: the
library would be a copy of the weights on disk and in memory for too little). A library that holds the
weights is keyed by the model files' identity as well (engine.step.store), so changed weights never meet an
old library. Imports torch lazily; may import modelfs.
"""

from __future__ import annotations

from typing import Any

MAX_BYTES = 2 * 2**30  # weights above this are bound at load rather than copied into the library
# float32 measured +8% decode for twice the peak memory on the default model (bfloat16: +27%), so it binds
DTYPES = ("bfloat16",)


def may_hold(loaded: Any) -> bool:
    """Whether the step's library may hold the weights: on the CPU, weights of DTYPES as the safetensors files
    have them (nothing quantized, no adapter), at most MAX_BYTES of them."""
    if loaded.device != "cpu" or loaded.quantize != "none" or getattr(loaded, "adapter", None) is not None:
        return False
    if loaded.dtype not in DTYPES or not any(loaded.source.path.glob("*.safetensors")):
        return False
    return _weight_bytes(loaded.model) <= MAX_BYTES


def pays(loaded: Any) -> bool:
    """Whether a kept library measured faster than the model's forward for this load, so that `--compile` is
    offered: one that may hold the weights, or one that binds an int4 or int8 model's unprepacked layers, at
    most MAX_BYTES of them (the default model in int4, `generate -n 128`: 38.6–39.4 against 22.2–28.0 tok/s;
    a 7B shape's int4 step gained nothing, its kernel being the whole step: docs/performance.md)."""
    if may_hold(loaded):
        return True
    if loaded.device != "cpu" or loaded.quantize not in ("int4", "int8") or loaded.prepacked:
        return False
    return _weight_bytes(loaded.model) + sum(b.numel() * b.element_size() for b in loaded.model.buffers()) <= MAX_BYTES


def kind(loaded: Any) -> str:
    """The dtype a library is offered for, with the quantization: "bfloat16 + int4"."""
    return loaded.dtype if loaded.quantize == "none" else f"{loaded.dtype} + {loaded.quantize}"


def weights_digest(loaded: Any) -> str:
    """The model files' digest (every weight file hashed once, then remembered by its stat: modelfs.identity)."""
    from llmcli.modelfs.identity import identity

    return identity(loaded.source.path)["digest"]


def _weight_bytes(model: Any) -> int:
    """The parameters' bytes, a tied tensor once (a released weight keeps its shape and dtype on meta)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())
