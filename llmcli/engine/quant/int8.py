"""8-bit weight-only codes (`--quantize int8`, `llmcli quantize --to int8`): per group along the inputs,
asymmetric (a scale and a zero per group, as int4), a weight `(code - 128) * scale + zero` with an 8-bit code.

torch has no per-group int8 kernel, and its per-channel one (`_weight_int8pack_mm`) gave mean KL 0.0035 on
the default model, past the 0.001 this scheme is for (docs/quantization.md). So a code is split into its two
4-bit halves, `code = 16 * high + low`, and the layer runs torch's int4 kernel once per half: the high half
with scale 16s, the low half with scale s, and the zero `zero + 8s` shared between them, which add up to the
weight. It reads 1.25 bytes a weight at group 32; on one row it measured as fast as the per-channel kernel.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from llmcli.engine.quant.codes import dequantize
from llmcli.engine.quant.int4 import Int4Codes

CHANNEL_GROUP = 32  # an older saved file's per-channel scale is repeated over groups of this size for the kernel


class Int8Codes(NamedTuple):
    """A weight as 8-bit codes [out, in] (uint8) with a scale and a zero per group [out, in / group]."""

    codes: Any
    scales: Any
    zeros: Any

    group_size = Int4Codes.group_size

    def halves(self) -> tuple[Int4Codes, Int4Codes]:
        """The two int4 weights that add up to this one."""
        import torch

        high, low = self.codes // 16, self.codes % 16
        zero = self.zeros.to(torch.float32) + 8 * self.scales.to(torch.float32)
        # The kernel holds bfloat16 zeros: the high half's takes what bfloat16 holds of the sum, the low half's the
        # rest, so that the two carry the zero to 16 bits rather than 8 (a step of an 8-bit code is 1/256 of a
        # group's range: one bfloat16 zero would be off by up to half a step).
        high_zero = zero.to(torch.bfloat16).to(torch.float32)
        return (
            Int4Codes(high, self.scales * 16, high_zero),
            Int4Codes(low, self.scales, zero - high_zero),
        )

    def dequantize(self) -> Any:
        return dequantize(self, middle=128)


def from_per_channel(codes: Any, scales: Any, group_size: int) -> Int8Codes:
    """A per-channel symmetric weight (signed codes, one scale a row: what `llmcli quantize --to int8` saved
    before it saved groups) as per-group codes, its one scale repeated over the groups, zero 0."""
    import torch

    groups = codes.shape[1] // group_size
    repeated = scales.to(torch.float32)[:, None].expand(-1, groups).contiguous()
    return Int8Codes((codes.to(torch.int16) + 128).to(torch.uint8), repeated, torch.zeros_like(repeated))
