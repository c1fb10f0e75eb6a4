"""Which layers a scheme quantizes, and the record of what it did (printed once, kept in `model` JSON, the
replay block and `ps`).

Every torch Linear is quantized but the output layer (the LM head), and any layer whose shape the kernel
refuses. The LM head stays in the model's dtype by measurement: on the default model, int4 everywhere but
there gave mean KL 0.0003 against float32; with the LM head in int4 too, 0.06 (docs/quantization.md). The
embeddings are a lookup, not a product: they stay too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmcli.engine.quant import int4

DEFAULT_GROUP_SIZE = 32  # measured: docs/quantization.md (the least error, and no slower on one row)
OUTPUT_LAYER = "the output layer, by measurement"


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
    """The names of the Linear layers to quantize, and the layers kept with the reason."""
    import torch

    head = model.get_output_embeddings()
    chosen, kept = [], {}
    for name, module in model.named_modules():
        if type(module) is not torch.nn.Linear:
            continue
        if module is head:
            kept[name] = OUTPUT_LAYER
            continue
        why = int4.refusal(module.out_features, module.in_features, group_size, device=device) if group_size else None
        if why is not None:
            kept[name] = why
        else:
            chosen.append(name)
    return chosen, kept


def set_module(model: Any, name: str, module: Any) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
