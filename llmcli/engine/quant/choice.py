"""Which layers a scheme quantizes, and the record of what it did (printed once, kept in `model` JSON, the
replay block and `ps`).

Every torch Linear is quantized but any layer whose shape the kernel refuses, and the output layer (the LM
head) is quantized in int8 whatever the scheme, by measurement: an int8 head moved the default model's logits
by mean KL 0.0005 and the off-grid model's by 0.0006, under what bfloat16 itself costs them (0.0012 and
0.0014), where an int4 head cost 0.07-0.08 (docs/quantization.md). A head tied to the embeddings stays as it
is: the embeddings are a lookup, not a product, and a quantized copy of them would add memory rather than
save it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmcli.engine.quant import int4

DEFAULT_GROUP_SIZE = 32  # measured: docs/quantization.md (the least error, and no slower on one row)
HEAD_SCHEME = "int8"  # the output layer's scheme, by measurement (above)
TIED_HEAD = "the output layer, tied to the embeddings"


@dataclass
class QuantChoice:
    """What a scheme did to a model."""

    scheme: str  # a name in engine.quant.schemes.SCHEMES
    group_size: int | None  # None: int8 read from a file saved per channel
    quantized: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # layer → why it stayed in float
    quantized_bytes: int = 0  # the quantized layers' codes, scales and zeros
    quantized_params: int = 0  # the weights they stand for
    gguf_blocks: int = 0  # of the quantized layers, those taken from a GGUF file's own blocks
    requantized: dict[str, str] = field(default_factory=dict)  # a GGUF's layers quantized again from floats: why
    head: str | None = None  # the output layer, when quantized (in HEAD_SCHEME, or a GGUF file's own blocks)
    seconds: float = 0.0  # spent making the quantized layers (codes and packing), reading aside

    def describe(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "group_size": self.group_size,
            "quantized_layers": len(self.quantized),
            "quantized_params": self.quantized_params,
            "quantized_bytes": self.quantized_bytes,
            "bits_per_weight": round(8 * self.quantized_bytes / self.quantized_params, 2)
            if self.quantized_params
            else None,
            "gguf_blocks": self.gguf_blocks,
            "requantized": dict(self.requantized),
            "output_layer": self.head,
            "kept": dict(self.kept),
        }

    def summary(self) -> str:
        """The one line printed on stderr at load."""
        group = f", group {self.group_size}" if self.group_size else ""
        bits = self.describe()["bits_per_weight"]
        kept = _listed(self.kept)
        blocks = f" ({self.gguf_blocks} from the GGUF file's own blocks of 32)" if self.gguf_blocks else ""
        again = _listed(self.requantized)
        return (
            f"{self.scheme}{group}: {len(self.quantized)} linear layers{blocks} at {bits} bits a weight"
            + (f"; the output layer {self.head} in {HEAD_SCHEME}" if self.head else "")
            + (f"; quantized from float weights, not the GGUF's blocks: {again}" if again else "")
            + (f"; kept in float: {kept}" if kept else "")
        )

    def add(self, model: Any, layer: str, new: Any) -> None:
        """Puts a quantized layer in the model in place of `layer`, and counts it."""
        from llmcli.engine.quant.layers import held_bytes

        set_module(model, layer, new)
        self.quantized.append(layer)
        self.quantized_bytes += held_bytes(new)
        self.quantized_params += new.in_features * new.out_features


def _listed(reasons: dict[str, str]) -> str:
    """Layers grouped by their reason: 'mlp.down_proj x30 (why); lm_head (why)'."""
    by_reason: dict[str, list[str]] = {}
    for name, why in reasons.items():
        by_reason.setdefault(why, []).append(name)
    return "; ".join(f"{_names(names)} ({why})" for why, names in by_reason.items())


def _names(names: list[str]) -> str:
    """Layer names, those repeated in every block shown once with a count: 'mlp.down_proj x30'."""
    import re
    from collections import Counter

    shapes = Counter(re.sub(r"^.*?\.\d+\.", "", name) for name in names)
    return ", ".join(shape if count == 1 else f"{shape} x{count}" for shape, count in shapes.items())


def targets(model: Any, *, scheme: str, group_size: int | None, device: str) -> tuple[list[str], dict[str, str]]:
    """The names of the Linear layers to quantize (an untied output layer among them: `output_head`), and the
    layers kept with the reason."""
    import torch

    head = model.get_output_embeddings()
    chosen, kept = [], {}
    for name, module in model.named_modules():
        if type(module) is not torch.nn.Linear:
            continue
        if module is head and _tied(model):
            kept[name] = TIED_HEAD
            continue
        why = int4.refusal(module.out_features, module.in_features, group_size, device=device) if group_size else None
        if why is not None:
            kept[name] = why
        else:
            chosen.append(name)
    return chosen, kept


def output_head(model: Any, chosen: list[str]) -> str | None:
    """The output layer's name when it is among the `chosen` layers (untied, a shape the kernel takes): it is
    quantized in HEAD_SCHEME; None otherwise."""
    import torch

    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or _tied(model):
        return None
    name = next(name for name, module in model.named_modules() if module is head)
    return name if name in chosen else None


def layer_scheme(layer: str, *, scheme: str, head: str | None) -> str:
    """The scheme a layer is quantized in: the output layer's, or the asked one."""
    return HEAD_SCHEME if layer == head else scheme


def _tied(model: Any) -> bool:
    return bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))


def set_module(model: Any, name: str, module: Any) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
