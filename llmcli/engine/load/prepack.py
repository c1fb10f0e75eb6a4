"""oneDNN-prepacked weights for a model's linear layers: the CPU's float32 and bfloat16 kernel where it measures
faster (engine.load.dtype_probe; serve's float32 default without a measurement).

A decoding step spends most of its time in the linear layers, and torch's default CPU matrix product repacks
each weight on every call: oneDNN with each weight reordered once at load was 1.5-3x faster there and on the
vocabulary projection in float32 (docs/performance.md), 1.4-2x in bfloat16 on an AMD EPYC with AVX-512 BF16,
at one row and at sixteen, and no slower for prefills. On the AVX2 machine it was measured on, its float32
result for a row did not depend on how many rows shared the call (the default's did), so a batched row's
linear layers computed exactly what they compute alone. torch.compile's freezing pass and vLLM's CPU backend
make the same choice. The originals are let go once reordered, except where something else reads them (a
tied embedding, an adapter's layers, a lone row's slices): there the price is a second copy in memory. The
reordering runs on the engine's thread (engine.load.worker), where the products will.

A lone row (one client decoding) is another matter: a matrix-vector product reads each weight once, from
memory, and neither oneDNN nor torch's default spread one of these layers' products over the cores (at 576
outputs both took as long on one thread as on two, at 5-8 GB/s where a sum over the same weights read 14).
With `split_lone_rows`, a one-row input is multiplied by the weight cut into one slice of outputs per core,
a batched product that torch runs a slice per thread: 1.7x faster a layer, a one-row step of the default
model ~90 -> ~68 ms. Its rounding is not the batched kernel's, so a row's last bits depend on whether it
decoded alone. In bfloat16 it gained nothing (48 against 50 us a 576-wide product): bfloat16 weights are not
sliced. Those figures were taken with the weights reordered on the main thread, which slowed oneDNN's lone
row; reordered on the engine thread, oneDNN is the faster (docs/serve.md), so serve no longer asks for the
slices: only `llmcli replay` of an older record that says `split_lone_rows` does.
"""

from __future__ import annotations

from functools import partial
from math import gcd
from typing import Any, NamedTuple


class Prepacked(NamedTuple):
    bytes: int  # the reordered copies (the slices are views of the weights)
    split_lone_rows: bool  # some layer slices a lone row's product across the threads
    released: int = 0  # the original weights let go (nothing reads them once their copy multiplies)


NOTHING = Prepacked(0, False)


def applies(*, device: str, dtype: str) -> bool:
    """Whether prepacking can be the kernel here: the CPU, float32 or bfloat16 (float16 and GPUs keep torch's)."""
    return device == "cpu" and dtype in ("float32", "bfloat16")


def refusal(model: Any, *, available: int) -> str | None:
    """Why this model's linear layers cannot be prepacked on this machine; None when they can."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    if getattr(model, "hf_device_map", None) and len(set(model.hf_device_map.values())) > 1:
        return "the model is placed across devices"
    linears = _linears(model)
    size = sum(layer.weight.nbytes for layer in linears)
    if size > available - max(available // 4, 1 << 30):  # the rest for the cache, activations and the system
        return f"its linear weights reordered ({size / 2**30:.1f} GiB) would leave too little of the free memory"
    return None


def prepack(model: Any, *, split_lone_rows: bool = False) -> Prepacked:
    """Every float32 or bfloat16 CPU linear layer computes with its weight reordered for oneDNN once, now, and
    with `split_lone_rows` a float32 one-row input with its weight sliced across the intra-op threads where it
    can be. A weight that nothing else reads (not tied to another module, no adapter wrapping the model, not
    sliced) is released once reordered: the layer keeps a meta-device weight of its shape and dtype (what code
    reads of it), and a weight mapped from the checkpoint's file gives its pages back (engine.load.pages)."""
    import torch

    from llmcli.engine.load import pages

    reorder = torch.ops.mkldnn._reorder_linear_weight
    threads = torch.get_num_threads()
    shared = _shared_weights(model)
    ranges = pages.file_ranges()
    size, split, released = 0, False, 0
    for layer in _linears(model):
        weight = layer.weight.detach()
        packed = reorder(weight, 8)  # the row count oneDNN picks its blocking for
        sliced = split_lone_rows and weight.dtype == torch.float32
        slices = _slices(weight, threads) if sliced else None
        layer.forward = partial(_packed_forward, layer, packed, slices)
        size, split = size + weight.nbytes, split or slices is not None
        if slices is None and id(layer.weight) not in shared:
            layer.weight = torch.nn.Parameter(torch.empty_like(weight, device="meta"), requires_grad=False)
            pages.drop(weight.data_ptr(), weight.nbytes, ranges)
            released += weight.nbytes
    return Prepacked(size, split, released)


def _shared_weights(model: Any) -> set[int]:
    """The parameters another part of the model reads besides their linear layer: those under more than one
    name (tied embeddings), and all of them where an adapter wraps the model (peft's layers read their base
    weight)."""
    from collections import Counter

    names = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    if hasattr(model, "peft_config"):
        return set(names)
    return {key for key, count in names.items() if count > 1}


def _slices(weight: Any, threads: int) -> Any:
    """The weight as [slices, inputs, outputs per slice]: a view, one slice per thread where the outputs
    divide evenly (None where fewer than two)."""
    outputs, inputs = weight.shape
    ways = gcd(outputs, threads)
    return None if ways < 2 else weight.reshape(ways, outputs // ways, inputs).transpose(1, 2)


def _linears(model: Any) -> list[Any]:
    import torch

    return [
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear
        and m.weight.dtype in (torch.float32, torch.bfloat16)
        and m.weight.device.type == "cpu"
    ]


def _packed_forward(layer: Any, packed: Any, slices: Any, x: Any) -> Any:
    import torch

    if slices is not None and x.numel() == x.shape[-1]:
        return _lone_row(x, slices, layer.bias)
    flat = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), packed, layer.bias, "none", [], "")
    return flat.reshape(*x.shape[:-1], flat.shape[-1])


def _lone_row(x: Any, slices: Any, bias: Any) -> Any:
    """One row times the sliced weight: torch's batched product gives each thread a slice of the outputs."""
    import torch

    ways, inputs, part = slices.shape
    out = torch.bmm(x.reshape(1, 1, inputs).expand(ways, 1, inputs), slices)
    out = out.reshape(*x.shape[:-1], ways * part)
    return out if bias is None else out + bias
