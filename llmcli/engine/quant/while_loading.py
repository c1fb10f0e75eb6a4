"""Quantizing while loading: the model built empty (accelerate's meta device), then the checkpoint read one
tensor at a time, each chosen layer's weight quantized as it arrives and freed; the model is never whole in
float, so a 7B model's int4 load peaks near its int4 size plus the layers that stay in float.

It reads the checkpoint's own names; a model whose names differ from its files' (transformers renames some
architectures' keys as it loads) is not for this path: `mismatch()` says so before anything loads, and the
loader then quantizes after an ordinary load instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcli.engine.quant.choice import QuantChoice, layer_scheme, output_head, targets
from llmcli.engine.quant.saved import NAIVE, PACKED
from llmcli.engine.quant.schemes import SCHEMES, of_codes
from llmcli.errors import LlmcliError
from llmcli.modelfs.checkpoint import Checkpoint


def empty_model(path: Path, *, dtype: str, trust: bool, attn: dict[str, str]) -> Any:
    """The model's modules with their parameters on the meta device (no memory) and buffers made for real."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype), trust_remote_code=trust, **attn)
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    return model


def mismatch(model: Any, ckpt: Checkpoint) -> str | None:
    """Why the checkpoint's tensor names do not load into this model by name; None when they do (a layer that
    `llmcli quantize` saved counts under its float weight's name)."""
    wanted = set(model.state_dict())
    names = {_float_name(key) for key in ckpt.tensors} - {None}
    extra = sorted(names - wanted)
    if extra:
        return f"the checkpoint's {extra[0]} is not one of the model's names"
    tied = {name for name in wanted if name not in names and _is_tied(model, name)}
    missing = sorted(wanted - names - tied)
    return f"the model's {missing[0]} is not in the checkpoint" if missing else None


def _float_name(key: str) -> str | None:
    layer, _, part = key.rpartition(".")
    if part == "weight_packed":
        return f"{layer}.weight"
    return None if part in PACKED else key


def _is_tied(model: Any, name: str) -> bool:
    head = model.get_output_embeddings()
    tie = getattr(model.config.get_text_config(), "tie_word_embeddings", False)
    return bool(tie) and head is not None and name == _name_of(model, head) + ".weight"


def _name_of(model: Any, module: Any) -> str:
    return next(name for name, m in model.named_modules() if m is module)


@dataclass
class Builders:
    """How each chosen layer is made: the parts of the checkpoint it needs (its bias aside) and a function from
    those parts and the bias to the quantized layer."""

    needs: dict[str, set[str]]  # layer → tensor suffixes it reads ("weight", "weight_packed", …); may be empty
    build: Callable[[str, dict[str, Any], Any], Any]  # (layer, parts, bias) → module
    kept: dict[str, str]
    from_file: int = 0  # layers taken from a GGUF file's blocks as they are
    requantized: dict[str, str] = field(default_factory=dict)  # a GGUF's layers quantized again, and why
    head: str | None = None  # the output layer, when it is among the layers built


def from_float(model: Any, *, scheme: str, group_size: int, device: str) -> Builders:
    """Layers quantized from their float weights as these arrive."""
    from llmcli.engine.quant.apply import quantized_layer

    names, kept = targets(model, scheme=scheme, group_size=group_size, device=device)
    head = output_head(model, names)

    def build(layer: str, parts: dict[str, Any], bias: Any) -> Any:
        weight = parts["weight"]
        if not weight.is_floating_point():
            raise LlmcliError(f"{layer}.weight is {str(weight.dtype).removeprefix('torch.')}, not a float weight: "
                              f"--quantize {scheme} cannot quantize it")  # fmt: skip
        return quantized_layer(weight, bias, scheme=layer_scheme(layer, scheme=scheme, head=head),
                               group_size=group_size, device=device, name=layer)  # fmt: skip

    return Builders({name: {"weight"} for name in names}, build, kept, head=head)


def from_saved(model: Any, ckpt: Checkpoint, *, scheme: str, group_size: int | None, device: str,
               overrides: dict[str, str] | None = None) -> Builders:  # fmt: skip
    """Layers `llmcli quantize` saved, built from their codes as they are (`group_size` None: int8 saved per
    channel, as llmcli wrote it before it saved groups; `overrides`: a layer saved in another scheme, the
    output layer's)."""
    from llmcli.engine.quant import saved
    from llmcli.modelfs.quantized import saved_layers

    names, packed = saved_layers(ckpt)
    kept = {name: "kept in float by the file" for name in _linear_names(model) if name not in set(names)}
    parts = set(NAIVE) if not packed else set(PACKED) if group_size is not None else set(PACKED) - {"weight_zero_point"}

    overrides = overrides or {}

    def build(layer: str, got: dict[str, Any], bias: Any) -> Any:
        own = SCHEMES[overrides.get(layer, scheme)]
        codes = saved.read(got, own) if group_size is not None else saved.read_int8_channel(got)
        return own.layer(codes, bias, device=device)

    head = next(iter(overrides), None)
    return Builders({name: parts for name in names}, build, kept, head=head)


def from_gguf(model: Any, gguf: Path, *, scheme: str, group_size: int, device: str) -> Builders:
    """A GGUF file's 4- and 8-bit blocks taken as they are (engine.quant.gguf_blocks); its other linear layers
    quantized from their float weights under `scheme`, each with the reason its blocks could not be used."""
    from llmcli.engine.quant import gguf_blocks

    floats = from_float(model, scheme=scheme, group_size=group_size, device=device)
    makers, requantized = gguf_blocks.layer_blocks(gguf, model, list(floats.needs))

    def build(layer: str, parts: dict[str, Any], bias: Any) -> Any:
        if layer not in makers:
            return floats.build(layer, parts, bias)
        codes = gguf_blocks.make(makers[layer], gguf)
        return of_codes(codes).layer(codes, bias, device=device)

    needs = {name: set() if name in makers else wanted for name, wanted in floats.needs.items()}
    return Builders(needs, build, floats.kept, from_file=len(makers), requantized=requantized, head=floats.head)


def fill(model: Any, path: Path, ckpt: Checkpoint, builders: Builders, *, scheme: str, group_size: int | None,
         dtype: str, device: str) -> QuantChoice:  # fmt: skip
    """Loads every tensor of the checkpoint into the empty model, each chosen layer made by its builder as soon
    as its parts have arrived (the float weight of a layer built otherwise is never read)."""
    import torch
    from accelerate.utils import set_module_tensor_to_device

    from llmcli.engine.quant import shard_reader

    choice = QuantChoice(scheme, group_size, kept=builders.kept, gguf_blocks=builders.from_file,
                         requantized=builders.requantized, head=builders.head)  # fmt: skip
    needs = {name: wanted | ({"bias"} if model.get_submodule(name).bias is not None else set())
             for name, wanted in builders.needs.items()}  # fmt: skip
    pending: dict[str, dict[str, Any]] = {name: {} for name in needs}
    float_dtype = getattr(torch, dtype)

    def arrive(layer: str) -> None:
        parts = pending.pop(layer)
        bias = parts.pop("bias", None)
        started = time.perf_counter()
        new = builders.build(layer, parts, None if bias is None else bias.to(float_dtype))
        choice.seconds += time.perf_counter() - started
        choice.add(model, layer, new)

    for layer in [name for name, wanted in needs.items() if not wanted]:
        arrive(layer)
    for shard in dict.fromkeys(info.shard for info in ckpt.tensors.values()):
        for key, value in shard_reader.tensors(path / shard):
            layer, _, part = key.rpartition(".")
            if layer not in needs:
                set_module_tensor_to_device(model, key, device, value=value, dtype=float_dtype)
            elif part in needs[layer] and layer in pending:
                pending[layer][part] = value
                if set(pending[layer]) == needs[layer]:
                    freed = sum(t.numel() * t.element_size() for t in pending[layer].values())
                    arrive(layer)
                    shard_reader.give_back_memory(freed)
    model.tie_weights()
    _check_loaded(model, path)
    return choice


def _linear_names(model: Any) -> list[str]:
    import torch

    return [name for name, m in model.named_modules() if type(m) is torch.nn.Linear]


def _check_loaded(model: Any, path: Path) -> None:
    left = [name for name, p in (*model.named_parameters(), *model.named_buffers()) if p.device.type == "meta"]
    if left:
        raise LlmcliError(f"the checkpoint has no {left[0]} ({len(left)} tensors missing)", path=path)
