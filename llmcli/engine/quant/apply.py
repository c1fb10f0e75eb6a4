"""Quantizing layers: one float weight into its quantized layer, or a loaded model's layers in place."""

from __future__ import annotations

from typing import Any

from llmcli.engine.quant.choice import QuantChoice, targets


def quantized_layer(weight: Any, bias: Any, *, scheme: str, group_size: int | None, device: str) -> Any:
    """The int4 or int8 layer for one float weight [out, in] (on any device; the result is on `device`)."""
    from llmcli.engine.quant import int4, int8
    from llmcli.engine.quant.layers import Int4Linear, Int8Linear

    if scheme == "int4":
        return Int4Linear(int4.quantize_weight(weight, group_size), bias, device=device)
    return Int8Linear(int8.quantize_weight(weight, group_size), bias, device=device)


def quantize_loaded(model: Any, *, scheme: str, group_size: int | None, device: str) -> QuantChoice:
    """Every chosen Linear of a model already in memory replaced by its quantized layer, one at a time (so the
    float weight of each is freed as the next is made)."""
    names, kept = targets(model, scheme=scheme, group_size=group_size, device=device)
    choice = QuantChoice(scheme, group_size, kept=kept)
    for name in names:
        old = model.get_submodule(name)
        choice.add(model, name, quantized_layer(old.weight, old.bias, scheme=scheme, group_size=group_size,
                                                device=device))  # fmt: skip
    return choice
