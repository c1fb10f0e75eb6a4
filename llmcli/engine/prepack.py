"""oneDNN-prepacked weights for a model's linear layers: serve's CPU float32 kernel.

A decoding step of 2-16 rows spends most of its time in the linear layers, and torch's default CPU matrix
product repacks each weight on every call: oneDNN with each weight reordered once at load was 1.5-3x faster
there and on the vocabulary projection (docs/performance.md), and no slower for prefills. On the AVX2 machine
it was measured on, its result for a row did not depend on how many rows shared the call (the default's
did), so a batched row's linear layers computed exactly what they compute alone. torch.compile's freezing
pass and vLLM's CPU backend make the same choice. The price is a second copy of the linear weights in memory
(the originals stay for everything else that reads them: tied embeddings, adapters, state dicts).
"""

from __future__ import annotations

from functools import partial
from typing import Any


def applies(*, device: str, dtype: str) -> bool:
    """Whether prepacking is the kernel choice here: the CPU, float32 (other dtypes and GPUs keep torch's)."""
    return device == "cpu" and dtype == "float32"


def refusal(model: Any, *, available: int) -> str | None:
    """Why this model's linear layers cannot be prepacked on this machine; None when they can."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    if getattr(model, "hf_device_map", None) and len(set(model.hf_device_map.values())) > 1:
        return "the model is placed across devices"
    size = sum(layer.weight.nbytes for layer in _linears(model))
    if size > available // 2:
        return f"a second copy of its linear weights ({size / 2**30:.1f} GiB) would take over half the free memory"
    return None


def prepack(model: Any) -> int:
    """Every float32 CPU linear layer computes with its weight reordered for oneDNN once, now: the bytes of
    the reordered copies."""
    import torch

    reorder = torch.ops.mkldnn._reorder_linear_weight
    layers = _linears(model)
    for layer in layers:
        packed = reorder(layer.weight.detach(), 8)  # the row count oneDNN picks its blocking for
        layer.forward = partial(_packed_forward, layer, packed)
    return sum(layer.weight.nbytes for layer in layers)


def _linears(model: Any) -> list[Any]:
    import torch

    return [
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"
    ]


def _packed_forward(layer: Any, packed: Any, x: Any) -> Any:
    import torch

    flat = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), packed, layer.bias, "none", [], "")
    return flat.reshape(*x.shape[:-1], flat.shape[-1])
