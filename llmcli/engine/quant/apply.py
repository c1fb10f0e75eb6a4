"""Quantizing layers: one float weight into its quantized layer, or a loaded model's layers in place."""

from __future__ import annotations

import time
from typing import Any

from llmcli.engine.quant.choice import QuantChoice, layer_scheme, output_head, targets
from llmcli.engine.quant.schemes import SCHEMES


def quantized_layer(weight: Any, bias: Any, *, scheme: str, group_size: int, device: str, name: str) -> Any:
    """The scheme's layer for one float weight [out, in] (on any device; the result is on `device`)."""
    entry = SCHEMES[scheme]
    return entry.layer(entry.quantize(weight, group_size, name=f"{name}.weight"), bias, device=device)


def quantize_loaded(model: Any, *, scheme: str, group_size: int, device: str) -> QuantChoice:
    """Every chosen Linear of a model already in memory replaced by its quantized layer, one at a time (so the
    float weight of each is freed as the next is made)."""
    names, kept = targets(model, scheme=scheme, group_size=group_size, device=device)
    head = output_head(model, names)
    choice = QuantChoice(scheme, group_size, kept=kept, head=head)
    started = time.perf_counter()
    for name in names:
        old, own = model.get_submodule(name), layer_scheme(name, scheme=scheme, head=head)
        choice.add(model, name, quantized_layer(old.weight, old.bias, scheme=own, group_size=group_size,
                                                device=device, name=name))  # fmt: skip
    choice.seconds = time.perf_counter() - started
    return choice
