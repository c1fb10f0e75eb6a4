"""reports.ps: a model's dtype cell says when a measurement chose it, and names its quantization."""

from __future__ import annotations

from llmcli.reports.ps import _dtype


def test_the_dtype_cell_says_measured_and_quantized():
    model = {"dtype": "bfloat16", "quantize": None, "quantization": None}
    assert _dtype(model) == "bfloat16"
    assert _dtype(model | {"dtype_choice": {"dtype": "bfloat16", "ms": {"bfloat16": 1.0, "float32": 2.0}}}) == (
        "bfloat16 (measured)"
    )
    onednn = {"dtype": "bfloat16", "product": "onednn", "ms": {"bfloat16": 2.0, "bfloat16+onednn": 1.0}}
    assert _dtype(model | {"dtype_choice": onednn}) == "bfloat16 (measured, oneDNN)"
    quant = {"scheme": "int4", "group_size": 32, "bits_per_weight": 5.0}
    assert _dtype(model | {"dtype": "float32", "quantization": quant}) == "float32 + int4 g32 (5.0 bits)"
