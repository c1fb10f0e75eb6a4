"""What each quantization scheme costs, beside llama.cpp's own (docs/quantization.md).

    python benchmarks/quant.py quality --text FILE --out docs/measurements/quant-quality-DATE.json
    python benchmarks/quant.py gguf MODEL_DIR OUT.gguf                       # a bf16 GGUF of a qwen2 directory
    python benchmarks/quant.py speed --model DIR --gguf Q4_0=FILE --gguf Q4_K_M=FILE --out FILE

quality: the default model, float32 against each llmcli scheme (compare's mean and p99 KL, top-1 agreement,
perplexity ratio), and llama.cpp's Q8_0, Q4_K_M and Q4_0 made by its own quantizer (through llama-cpp-python)
from a float32 GGUF of the same weights, each scored against that float32 GGUF's logits, on the same token ids.
speed: one fresh process per configuration; load seconds, time to first token on a 512-token prompt, greedy
decode tokens/s and the process's peak RSS. llama-cpp-python is a measurement peer only (not in CI).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK = "int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024"
SCHEMES = [("int4 g32", ["--quantize", "int4", "--group-size", "32"]),
           ("int4 g64", ["--quantize", "int4", "--group-size", "64"]),
           ("int4 g128", ["--quantize", "int4", "--group-size", "128"]),
           ("int8 g32", ["--quantize", "int8"]),
           ("int8-dynamic", ["--quantize", "int8-dynamic"])]  # fmt: skip
LLAMA_TYPES = {"Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15}  # llama_ftype values


def cpu() -> dict:
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "")
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni")
    return {"model": model, "flags": [f for f in wanted if f in flags], "machine": platform.machine()}


def llmcli_json(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "llmcli", *args, "--json"], capture_output=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(proc.stderr.decode())
    return json.loads(proc.stdout)


def kl_stats(base, cand) -> dict:
    import torch

    lp, lq = torch.log_softmax(base, -1), torch.log_softmax(cand, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    return {"kl_mean": kl.mean().item(), "kl_p99": kl.quantile(0.99).item(),
            "top1": (base.argmax(-1) == cand.argmax(-1)).float().mean().item()}  # fmt: skip


def quality(args: argparse.Namespace) -> dict:
    """Each scheme quantizing the converted float weights (the directory, not the GGUF file), and the GGUF
    file's own Q4_1 blocks taken as they are."""
    from llmcli.modelfs.default_model import cached_dir_for, default_gguf

    float_dir = str(cached_dir_for(default_gguf()))
    rows = {}
    for name, flags in [*SCHEMES, ("int4 GGUF Q4_1 blocks", ["--quantize", "int4"])]:
        model = [] if "GGUF" in name else [float_dir]
        got = llmcli_json(["compare", *model, "--dtype", "float32", "--file", args.text, "--window", "2048",
                           "--candidate-quantize", *flags[1:]])  # fmt: skip
        rows[name] = {"kl_mean": got["kl"]["mean"], "kl_p99": got["kl"]["p99"], "top1": got["top1_agreement"],
                      "perplexity_ratio": got["perplexity_ratio"], "tokens": got["scored_tokens"]}  # fmt: skip
        print(name, rows[name], file=sys.stderr)
    if args.saved:
        got = llmcli_json(["compare", "", args.saved, "--dtype", "float32", "--file", args.text, "--window", "2048"])
        rows["saved int4 g32 (llmcli quantize)"] = {"kl_mean": got["kl"]["mean"], "kl_p99": got["kl"]["p99"],
                                                    "top1": got["top1_agreement"],
                                                    "perplexity_ratio": got["perplexity_ratio"]}  # fmt: skip
    if args.float_gguf:
        rows |= llama_quality(args)
    return {"cpu": cpu(), "text_tokens_window": 2048, "schemes": rows}


def llama_quality(args: argparse.Namespace) -> dict:
    """llama.cpp's quantizations of a float32 GGUF, scored against that GGUF on the first 2,048 tokens."""
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from llmcli.modelfs.default_model import cached_dir_for, default_gguf

    ids = AutoTokenizer.from_pretrained(str(cached_dir_for(default_gguf())))(Path(args.text).read_text()).input_ids
    ids = ids[:2048]

    def logits(path: str) -> torch.Tensor:
        llm = Llama(model_path=path, n_ctx=2048, n_batch=512, logits_all=True, verbose=False, n_threads=2)
        llm.eval(ids)
        return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))

    base = logits(args.float_gguf)
    out = {}
    for name, ftype in LLAMA_TYPES.items():
        path = str(Path(args.float_gguf).with_suffix(f".{name}.gguf"))
        quantize_gguf(args.float_gguf, path, ftype)
        stats = kl_stats(base[:-1], logits(path)[:-1])
        out[f"llama.cpp {name}"] = stats
        print(name, stats, file=sys.stderr)
    return out


def quantize_gguf(src: str, dst: str, ftype: int) -> None:
    import llama_cpp

    if Path(dst).exists():
        return
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params) != 0:
        raise SystemExit(f"llama.cpp could not quantize {src}")


def float_gguf_of_default(out: str) -> None:
    """The default model's GGUF with every tensor dequantized to float32 (the weights llmcli's base has)."""
    import gguf

    from llmcli.modelfs.default_model import default_gguf

    reader = gguf.GGUFReader(str(default_gguf()))
    writer = gguf.GGUFWriter(out, arch=str(reader.fields["general.architecture"].contents()))
    copy_fields(reader, writer, skip=("general.architecture", "general.file_type"))
    for t in reader.tensors:
        writer.add_tensor(t.name, gguf.quants.dequantize(t.data, t.tensor_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def copy_fields(reader, writer, *, skip: tuple[str, ...], only_prefix: str = "") -> None:
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in skip or not key.startswith(only_prefix):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf_array() else None
        writer.add_key_value(key, field.contents(), kind, sub_type=sub)


def gguf_array():
    import gguf

    return gguf.GGUFValueType.ARRAY


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--text", required=True)
    q.add_argument("--saved", help="a `llmcli quantize --to int4` copy of the default model")
    q.add_argument("--float-gguf", help="where to write the default model's float32 GGUF (llama.cpp's base)")
    q.add_argument("--out", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--model", required=True)
    s.add_argument("--gguf", action="append", default=[], help="NAME=FILE for llama-cpp-python")
    s.add_argument(
        "--llmcli",
        action="append",
        default=[],
        help="NAME=DTYPE QUANTIZE [kernel] [gN], e.g. 'int4=bfloat16 int4 g64' (kernel: no tiles; gN: group size)",
    )
    s.add_argument("--decode", type=int, default=16)
    s.add_argument("--out", required=True)
    g = sub.add_parser("gguf")
    g.add_argument("model_dir")
    g.add_argument("out")
    args = ap.parse_args()
    if args.what == "gguf":
        from quant_speed import write_qwen2_gguf

        write_qwen2_gguf(Path(args.model_dir), Path(args.out))
        return 0
    if args.what == "quality":
        if args.float_gguf and not Path(args.float_gguf).exists():
            float_gguf_of_default(args.float_gguf)
        record = quality(args)
    else:
        from quant_speed import speed

        record = speed(args)
    record["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
