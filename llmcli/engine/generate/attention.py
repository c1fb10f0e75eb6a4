"""Which attention kernel one generate() call uses when the user left `--attn auto`: on CUDA (below), and on
the CPU plain SDPA for a static cache's step, compiled or not, where the load chose engine.load.cpu_attention's
float32 step (under the registered attention generate() did not call the compiled step: transformers built no
mask for that name until it was registered for SDPA's masks as well, so the static cache's step attended over
the whole cache eagerly, 7 tok/s). The compiled step itself is traced with the float32 step
(engine.step.export), so that switch only names the call.

Measured on an H200 with a Qwen2.5-7B-shaped model (docs/performance.md): in a fresh process, SDPA's
decoding steps cost 65 ms (cuDNN backend) or 34 ms (without it) until each key length has been seen once
(19 ms warm), and a one-shot `generate` sees every length for the first time; eager attention (two
matmuls and a softmax) runs 20 ms steps from the second step on. Eager builds the whole attention matrix
during the prefill, so it is used only for prefills up to SHORT_PREFILL_TOKENS; a static cache
(`--compile`) keeps SDPA, whose key length is fixed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SHORT_PREFILL_TOKENS = 2048


def choose(loaded: Any, prefill_tokens: int, static_cache: bool) -> str | None:
    """The implementation to switch to for this call, or None to keep the one loaded."""
    from llmcli.engine.load.cpu_attention import NAME

    if static_cache and loaded.attn == NAME:  # generate() calls the compiled step under plain SDPA
        return "sdpa"
    if loaded.attn_request != "auto" or not loaded.device.startswith("cuda") or static_cache:
        return None
    if loaded.attn != "sdpa" or prefill_tokens > SHORT_PREFILL_TOKENS:
        return None
    return "eager"


@contextmanager
def attention_for_call(loaded: Any, prefill_tokens: int, static_cache: bool) -> Iterator[str | None]:
    """Switch the model's attention for one call and back; yields the implementation in use."""
    target = choose(loaded, prefill_tokens, static_cache)
    model = loaded.model
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    if target is None or can_switch is None or not can_switch():
        yield loaded.attn
        return
    previous = loaded.attn
    model.set_attn_implementation(target)
    try:
        yield target
    finally:
        model.set_attn_implementation(previous)
