"""The weight-only schemes, one entry each: their width, codes, layer, size in memory and saved form. Loading,
`llmcli quantize`, the saved layout and the memory check read this table, so a new scheme is one entry here
(its codes and its layer) rather than a branch in each of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmcli.engine.quant.int4 import Int4Codes
from llmcli.engine.quant.int8 import Int8Codes
from llmcli.errors import LlmcliError


@dataclass(frozen=True)
class Scheme:
    name: str
    bits: int
    codes: type  # Int4Codes or Int8Codes: a NamedTuple of codes, scales and zeros
    layer_class: str  # its module in engine.quant.layers (imported when a layer is made: torch at its top)

    @property
    def middle(self) -> int:
        return 2 ** (self.bits - 1)

    def quantize(self, weight: Any, group_size: int, *, importance: Any = None, name: str = "the weight") -> Any:
        """Codes for a float weight [out, in], as loading computes them and `llmcli quantize` saves them (a
        float zero per group; `importance`: a weight per input column, from a calibration text). A weight with
        NaN or inf is refused by `name` (its codes would be meaningless)."""
        import torch

        from llmcli.engine.quant.fast_search import search

        codes, scales, zeros = search(weight, group_size, bits=self.bits, importance=importance)
        # A NaN or inf weight makes its group's scale or zero NaN or inf: checking those (1/group of the weights)
        # costs nothing, where checking every weight took 2.4 ns a weight (16 s of a 7B load).
        if not bool(torch.isfinite(scales).all() and torch.isfinite(zeros).all()):
            wide = weight if weight.dtype in (torch.float32, torch.bfloat16, torch.float16) else weight.float()
            what = "NaN or infinite values" if not bool(torch.isfinite(wide).all()) else "values too large for a scale"
            raise LlmcliError(f"{name} holds {what}: it cannot be quantized")
        return self.codes(codes, scales, zeros)

    def layer(self, codes: Any, bias: Any, *, device: str) -> Any:
        from llmcli.engine.quant import layers

        return getattr(layers, self.layer_class)(codes, bias, device=device)

    def bytes_per_weight(self, group_size: int) -> float:
        """What a layer holds a weight: one int4 product per 4 bits, each half a byte a weight plus a bfloat16
        scale and zero a group (engine.quant.layers.Int4Linear)."""
        return (self.bits // 4) * (0.5 + 4 / group_size)

    def saved_weights(self, group_size: int) -> dict[str, Any]:
        """compressed-tensors' description of the saved codes (config.json's quantization_config): the zero point
        a float (engine.quant.saved)."""
        return {"num_bits": self.bits, "type": "int", "symmetric": False, "strategy": "group", "group_size": group_size,
                "zp_dtype": "float32"}  # fmt: skip


SCHEMES = {scheme.name: scheme for scheme in (Scheme("int4", 4, Int4Codes, "Int4Linear"),
                                              Scheme("int8", 8, Int8Codes, "Int8Linear"))}  # fmt: skip


def of_codes(codes: Any) -> Scheme:
    """The scheme a set of codes belongs to (a GGUF file's blocks come as either)."""
    return next(scheme for scheme in SCHEMES.values() if isinstance(codes, scheme.codes))
