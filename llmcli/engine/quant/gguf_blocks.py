"""A GGUF file's quantized blocks as the kernel's codes, without a float detour.

Q4_0, Q4_1 and Q4_K keep 32 weights per (scale, minimum) pair, 4 bits each: exactly int4 at group 32, with
the zero `minimum + 8 * scale` (Q4_0: `-8 * scale` folded in, zero 0). Q8_0 is 32 int8 weights and a
scale: int8 at group 32 with zero 0. Names and row order are transformers' own (its GGUF name map, and its
tensor processor's row permutation, e.g. llama's query and key rows, applied to the rows' indices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.engine.quant.int4 import Int4Codes
from llmcli.engine.quant.int8 import Int8Codes

INT4_TYPES = ("Q4_0", "Q4_1", "Q4_K")
INT8_TYPES = ("Q8_0",)


def _f16(raw: Any) -> Any:
    import numpy as np

    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)[..., 0]


def _nibbles(qs: Any) -> Any:
    """16 bytes → 32 codes: the low nibbles are the first 16 weights, the high ones the next 16."""
    import numpy as np

    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def int4_codes(raw: Any, qtype: str) -> Int4Codes:
    """One tensor's rows of blocks ([rows, bytes], uint8) as int4 codes at group 32."""
    import numpy as np
    import torch

    rows = raw.shape[0]
    if qtype == "Q4_K":
        return _q4_k(raw)
    size = 18 if qtype == "Q4_0" else 20
    blocks = raw.reshape(rows, -1, size)
    scale = _f16(blocks[..., 0:2])
    codes = _nibbles(blocks[..., size - 16 :])
    zero = np.zeros_like(scale) if qtype == "Q4_0" else _f16(blocks[..., 2:4]) + 8 * scale
    return Int4Codes(torch.from_numpy(codes.reshape(rows, -1)), torch.from_numpy(scale), torch.from_numpy(zero))


def _q4_k(raw: Any) -> Int4Codes:
    """Q4_K: 256 weights a super-block, eight sub-blocks of 32 with 6-bit scales and minimums times the
    super-block's d and dmin; the codes of sub-blocks 2c and 2c+1 are the low and high nibbles of 32 bytes."""
    import numpy as np
    import torch
    from gguf.quants import Q4_K

    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, 144)
    count = blocks.shape[1]
    d, dmin = _f16(blocks[..., 0:2])[..., None], _f16(blocks[..., 2:4])[..., None]
    sc, mn = Q4_K.get_scale_min(np.ascontiguousarray(blocks[..., 4:16]).reshape(-1, 12))
    sc = sc.reshape(rows, count, 8).astype(np.float32)
    mn = mn.reshape(rows, count, 8).astype(np.float32)
    qs = blocks[..., 16:].reshape(rows, count, 4, 1, 32)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=3).reshape(rows, -1)
    scale = (d * sc).reshape(rows, -1)
    zero = (8 * d * sc - dmin * mn).reshape(rows, -1)
    return Int4Codes(torch.from_numpy(codes), torch.from_numpy(scale), torch.from_numpy(zero))


def int8_codes(raw: Any) -> Int8Codes:
    """Q8_0: a float16 scale and 32 int8 weights a block."""
    import numpy as np
    import torch

    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, 34)
    scale = _f16(blocks[..., 0:2])
    codes = (np.ascontiguousarray(blocks[..., 2:]).view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    zero = np.zeros_like(scale)
    return Int8Codes(torch.from_numpy(codes.reshape(rows, -1)), torch.from_numpy(scale), torch.from_numpy(zero))


def reorder(codes: Any, order: Any) -> Any:
    """The same codes with their rows (outputs) in another order."""
    return type(codes)(*(t[order] for t in codes))


def layer_blocks(gguf_path: Path, model: Any, names: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """For each of `names` (the model's Linear layers) whose GGUF tensor is in 4- or 8-bit blocks, a function
    making its codes; and the others with the reason their blocks cannot be used as they are."""
    import gguf
    import numpy as np
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    reader = gguf.GGUFReader(str(gguf_path))
    arch = str(reader.fields["general.architecture"].contents())
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config.to_dict())
    tensors = {t.name: t for t in reader.tensors}
    to_gguf = _gguf_names(arch, model.config.get_text_config().num_hidden_layers)
    makers, left = {}, {}
    for name in names:
        tensor = tensors.get(f"{to_gguf(name)}.weight")
        qtype = tensor.tensor_type.name if tensor is not None else None
        if qtype not in (*INT4_TYPES, *INT8_TYPES):
            left[name] = f"its GGUF tensor is {qtype or 'missing'}, not 4- or 8-bit blocks"
            continue
        rows = int(tensor.shape[-1])
        try:
            order = processor.process(weights=np.arange(rows).reshape(rows, 1), name=tensor.name).weights
        except Exception as exc:  # noqa: BLE001 - a processor that needs more than a row permutation
            left[name] = f"transformers' GGUF processor does more than reorder its rows ({type(exc).__name__})"
            continue
        if sorted(order.reshape(-1).tolist()) != list(range(rows)) or order.shape != (rows, 1):
            left[name] = "transformers reshapes its GGUF tensor beyond reordering rows"
            continue
        makers[name] = (tensor, qtype, order.reshape(-1).copy())
    return makers, left


def _gguf_names(arch: str, layers: int) -> Any:
    """The model's module name → the GGUF tensor's base name, by gguf-py's own table (what transformers'
    get_gguf_hf_weights_map reads, without its walk over every submodule: ~14 s on the default model)."""
    import gguf

    key = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), None)
    table = gguf.get_tensor_name_map(key, layers) if key is not None else None
    return lambda name: (table.get_name(name) if table is not None else None) or ""


def make(maker: tuple, gguf_path: Path) -> Any:
    """Int4Codes or Int8Codes for one layer from layer_blocks' entry. The blocks are read with a plain file read,
    not through the reader's memory map: a mapped page stays in the process's resident set until the map goes,
    which put the whole file on top of the codes (a 4-layer 7B-shaped Q4_K_M file's int4 load peaked 0.6 GB
    above its bfloat16 load)."""
    import numpy as np

    tensor, qtype, order = maker
    with open(gguf_path, "rb") as fh:
        fh.seek(int(tensor.data_offset))
        data = fh.read(int(tensor.n_bytes))
    raw = np.frombuffer(data, dtype=np.uint8).reshape(tensor.data.shape)
    codes = int4_codes(raw, qtype) if qtype in INT4_TYPES else int8_codes(raw)
    return reorder(codes, order)
