"""torch's dynamic int8 (`--quantize int8-dynamic`): CPU only, the weights of every Linear stored as int8 and the
activations quantized per batch by fbgemm's kernels."""

from __future__ import annotations

from typing import Any


def quantize_int8(model: Any) -> Any:
    """torch's dynamic int8: Linear weights stored as int8, activations quantized per batch (fbgemm kernels)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
