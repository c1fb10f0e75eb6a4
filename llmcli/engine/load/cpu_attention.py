"""Attention for a CPU decoding step in bfloat16 or float16: transformers' own SDPA function, on float32 copies
of the query, keys and values.

torch's CPU flash-attention kernel, which SDPA takes for these shapes, is several times slower in bfloat16 than
in float32 for one query position: one query of 9 heads against 3 key/value heads of 64 dims (the default
model's shape) took 30 / 107 / 484 us in bfloat16 at 64 / 256 / 1,024 keys against 8 / 16 / 52 us in float32
(AMD EPYC, avx512_bf16; docs/performance.md). A decoding step runs it once a layer, so at long contexts it
outweighed the rest of the step. With `--attn auto` on the CPU in bfloat16 or float16, the model's attention is
registered under NAME with transformers' AttentionInterface: a call with one query position per row (a
decoding step, alone or batched in serve) upcasts and casts the output back; a prefill goes straight to SDPA,
unless its keys are float32 already (serve's batch keeps its cache in float32: engine.batch.stepper). The name
is registered for SDPA's masks too: without them transformers passes no mask (padding and windows ignored).
bfloat16 and float16 values are exact in float32, so the result differs from the plain call by the kernel's
rounding only. Imported once a model has loaded: torch and transformers at its top (the attention runs once a
layer a step, where a function-level import would be paid every call).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "sdpa_float32_decode"
NARROW = ("bfloat16", "float16")


def attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> tuple[Any, Any]:
    """transformers' `sdpa_attention_forward`, in float32 for a step of one query position a row."""
    narrow = query.dtype in (torch.bfloat16, torch.float16)
    if not narrow or (query.shape[2] != 1 and key.dtype == query.dtype):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    mask = attention_mask
    if mask is not None and mask.dtype != torch.bool:  # an additive mask joins the float32 scores
        mask = mask.float()
    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] == 1 and groups > 1 and (mask is None or mask.shape[1] == 1) and _plain(kwargs):
        return _packed(query, key.float(), value.float(), mask, groups, kwargs.get("scaling")), None
    out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), mask, **kwargs)
    return out.to(query.dtype), weights


def _plain(kwargs: dict[str, Any]) -> bool:
    """Whether the call asks for nothing beyond SDPA's scaled, masked attention."""
    return not kwargs.get("dropout") and all(kwargs.get(k) is None for k in ("softcap", "position_bias", "s_aux"))


def _packed(query: Any, key: Any, value: Any, mask: Any, groups: int, scaling: Any) -> Any:
    """One query position a row with its grouped heads folded onto their key/value head, as transformers'
    `pack_gqa` does (which it skips while tracing: the compiled step then copied every layer's keys and values
    once per group, [rows, heads, columns, dim] in float32, at 16 rows most of the step; docs/performance.md)."""
    rows, heads, _, dim = query.shape
    packed = query.float().reshape(rows, heads // groups, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous().to(query.dtype)


def install(model: Any, *, device: str, dtype: str, requested: str) -> bool:
    """Switches a model loaded with SDPA under `--attn auto` on the CPU in bfloat16 or float16 to NAME; says
    whether it did (another request, device, dtype or implementation keeps what was loaded)."""
    if requested != "auto" or device != "cpu" or dtype not in NARROW:
        return False
    if getattr(getattr(model, "config", None), "_attn_implementation", None) != "sdpa":
        return False
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    if can_switch is None or not can_switch():
        return False
    AttentionInterface.register(NAME, attention)
    # transformers builds no mask at all for a name its mask registry lacks: padded rows would attend to their
    # padding and sliding-window layers past their window. SDPA's masks are what the function above takes.
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
