"""4-bit weight-only linear layers (`--quantize int4`) on torch's int4 kernels.

A weight is cut into groups of `group_size` inputs; each group has a scale and a zero, and a weight is
`(code - 8) * scale + zero` with a 4-bit code. The CPU kernel (`_weight_int4pack_mm_for_cpu`) and the CUDA
one (`_weight_int4pack_mm`) both take bfloat16 activations and bfloat16 scales and zeros: with float32
activations the CPU kernel was ~50x slower (issue 29), so a layer casts its input to bfloat16 and its
output back, and the rest of the model keeps its dtype. Codes come from float weights (engine.quant.codes,
through the scheme table engine.quant.schemes), from `llmcli quantize`'s files or from a GGUF file's own blocks
(engine.quant.gguf_blocks).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from llmcli.engine.quant.codes import dequantize

CUDA_INNER_K_TILES = 8  # the CUDA packing's tile; it needs the inputs to be a multiple of 16 * this


class Int4Codes(NamedTuple):
    """A weight as 4-bit codes [out, in] (uint8, 0..15) with a scale and a zero per group [out, in / group]:
    weight = (code - 8) * scale + zero."""

    codes: Any
    scales: Any
    zeros: Any

    @property
    def group_size(self) -> int:
        return self.codes.shape[1] // self.scales.shape[1]

    def dequantize(self) -> Any:
        """The float32 weight these codes stand for (tests, and the benchmarks' checks)."""
        return dequantize(self, middle=8)


def refusal(out_features: int, in_features: int, group_size: int, *, device: str) -> str | None:
    """Why torch's int4 kernel cannot take a layer of this shape; None when it can."""
    if in_features % group_size:
        return f"its {in_features} inputs are not a multiple of the group size {group_size}"
    if device.startswith("cuda") and in_features % (16 * CUDA_INNER_K_TILES):
        return f"its {in_features} inputs are not a multiple of {16 * CUDA_INNER_K_TILES} (CUDA's int4 packing)"
    if device.startswith("cuda") and out_features % 8:
        return f"its {out_features} outputs are not a multiple of 8 (CUDA's int4 packing)"
    return None


def pack(codes: Any, *, device: str) -> Any:
    """The kernel's packed layout: on the CPU engine.quant.cpu_packing's (torch's layout, without widening the
    codes to int32 first); CUDA's packer takes two codes a byte (the even input in the high nibble) and tiles."""
    import torch

    if not device.startswith("cuda"):
        from llmcli.engine.quant import cpu_packing

        return cpu_packing.pack(codes.to(torch.uint8))
    on_gpu = codes.to(device=device, dtype=torch.int32)
    pairs = ((on_gpu[:, ::2] << 4) | on_gpu[:, 1::2]).to(torch.uint8)
    return torch.ops.aten._convert_weight_to_int4pack(pairs, CUDA_INNER_K_TILES)
