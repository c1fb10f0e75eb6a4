"""A float model whose weights sit on no 4-bit grid, for the quantization quality benchmarks (issue 39).

The default model is a Q4_1 GGUF: its weights already lie on 16 levels per group of 32, and a group-32 code
lands back on them. This writes the same model with Gaussian noise (a fraction of each tensor's standard
deviation, seeded) added to every 2-D weight but the embeddings, twice, holding the same float32 numbers: a
GGUF (the base llama.cpp's quantizer reads) and a transformers directory converted from it (what llmcli reads).

    python benchmarks/offgrid.py OUT_DIR [--noise 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def noised_gguf(out: Path, *, noise: float, seed: int) -> None:
    import gguf
    import numpy as np
    from quant import copy_fields

    from llmcli.modelfs.default_model import default_gguf

    reader = gguf.GGUFReader(str(default_gguf()))
    writer = gguf.GGUFWriter(str(out), arch=str(reader.fields["general.architecture"].contents()))
    copy_fields(reader, writer, skip=("general.architecture", "general.file_type"))
    rng = np.random.default_rng(seed)
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if values.ndim == 2 and not t.name.startswith("token_embd"):
            values = values + rng.standard_normal(values.shape, dtype=np.float32) * (values.std() * noise)
        writer.add_tensor(t.name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def converted(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))  # fmt: skip
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gguf_path = args.out / "offgrid-f32.gguf"
    noised_gguf(gguf_path, noise=args.noise, seed=args.seed)
    converted(gguf_path, args.out / "model")
    (args.out / "offgrid.json").write_text(json.dumps({"noise": args.noise, "seed": args.seed}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
