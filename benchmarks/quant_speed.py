"""benchmarks/quant.py's speed half: a bf16 GGUF of a (random) qwen2 directory for llama.cpp, and one fresh
process per configuration timing load, the first token of a 512-token prompt and greedy decoding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from quant import PEAK, ROOT, copy_fields, cpu, quantize_gguf

LLMCLI_CHILD = """
import json, sys, time, torch
from llmcli.engine.load.loader import load
from llmcli.modelfs.source import ModelSource
from llmcli.plan import LoadSpec, Quantize
path, dtype, quantize, decode = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if "kernel" in sys.argv[5:]:  # prefill through torch's int4 kernel, as before the dequantized tiles
    from llmcli.engine.quant import int4_tiles
    int4_tiles.MANY_ROWS = 10**9
group = next((int(a[1:]) for a in sys.argv[5:] if a[:1] == "g"), None)  # g64: --group-size 64
started = time.perf_counter()
spec = LoadSpec(dtype=dtype, quantize=Quantize(quantize), group_size=group)
loaded = load(ModelSource(__import__('pathlib').Path(path), path), spec)
load_s = time.perf_counter() - started
ids = torch.randint(100, 40000, (1, 512), generator=torch.Generator().manual_seed(0))
class Clock:
    def __init__(self): self.times = []
    def put(self, value): self.times.append(time.perf_counter())
    def end(self): pass
def run(n, prompt):
    clock, started = Clock(), time.perf_counter()
    with torch.no_grad():
        loaded.model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=clock)
    return clock.times[1] - started, (len(clock.times) - 2) / (clock.times[-1] - clock.times[1])
run(3, ids[:, :16])  # the first call pays for paging the weights in and the kernels' set-up
first, rate = run(decode + 1, ids)
# a second 512-token prompt: the first pays for whatever compiles on first use (the int4 prefill tiles)
again, _ = run(2, torch.randint(100, 40000, (1, 512), generator=torch.Generator().manual_seed(1)))
print(json.dumps({"load_s": load_s, "ttft_s": first, "ttft_again_s": again, "decode_tok_s": rate,
                  "peak_rss_bytes": PEAK_RSS, "quantization": loaded.quantization and
                  {k: v for k, v in loaded.quantization.items() if k != "kept"}}))
""".replace("PEAK_RSS", PEAK)

LLAMA_CHILD = """
import json, sys, time
from llama_cpp import Llama
path, decode = sys.argv[1], int(sys.argv[2])
started = time.perf_counter()
llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=2, verbose=False)
load_s = time.perf_counter() - started
import random
random.seed(0)
prompt = [random.randrange(100, 40000) for _ in range(512)]
llm.eval(prompt[:16])  # the first call pays for paging the weights in
llm.reset()
t = time.perf_counter()
llm.eval(prompt)
token = llm.sample(temp=0.0)
first = time.perf_counter() - t
t = time.perf_counter()
for _ in range(decode):
    llm.eval([token])
    token = llm.sample(temp=0.0)
rate = decode / (time.perf_counter() - t)
print(json.dumps({"load_s": load_s, "ttft_s": first, "decode_tok_s": rate, "peak_rss_bytes": PEAK_RSS}))
""".replace("PEAK_RSS", PEAK)


def child(code: str, args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, cwd=ROOT, timeout=3600)
    if proc.returncode:
        return {"error": proc.stderr.decode()[-2000:]}
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def speed(args) -> dict:
    rows = {}
    for spec in args.llmcli or ["bfloat16=bfloat16 none", "int8=bfloat16 int8", "int4=bfloat16 int4"]:
        name, _, rest = spec.partition("=")
        dtype, quantize, *prefill = rest.split()
        rows[f"llmcli {name}"] = child(LLMCLI_CHILD, [args.model, dtype, quantize, str(args.decode), *prefill])
        print(name, rows[f"llmcli {name}"], file=sys.stderr)
    for spec in args.gguf:
        name, _, path = spec.partition("=")
        rows[f"llama.cpp {name}"] = child(LLAMA_CHILD, [path, str(args.decode)])
        print(name, rows[f"llama.cpp {name}"], file=sys.stderr)
    return {"cpu": cpu(), "model": args.model, "prompt_tokens": 512, "decode_tokens": args.decode, "rows": rows}


def write_qwen2_gguf(model_dir: Path, out: Path) -> None:
    """A bf16 GGUF (llama.cpp's qwen2) of a qwen2 safetensors directory, one tensor in memory at a time, with
    the default model's tokenizer (its vocabulary is the directory's)."""
    import gguf
    import torch
    from safetensors import safe_open

    from llmcli.modelfs.default_model import default_gguf

    config = json.loads((model_dir / "config.json").read_text())
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, config["num_hidden_layers"])
    writer = gguf.GGUFWriter(str(out), arch="qwen2")
    writer.add_context_length(4096)
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config.get("rope_theta") or config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    copy_fields(gguf.GGUFReader(str(default_gguf())), writer, skip=(), only_prefix="tokenizer.")
    files = sorted(model_dir.glob("*.safetensors"))
    order = []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118
                base, _, suffix = key.rpartition(".")
                target = f"{names.get_name(base)}.{suffix}"
                shape = f.get_slice(key).get_shape()
                one_d = len(shape) == 1
                kind = gguf.GGMLQuantizationType.F32 if one_d else gguf.GGMLQuantizationType.BF16
                nbytes = (4 if one_d else 2) * int(torch.tensor(shape).prod())
                writer.add_tensor_info(target, shape, torch.float32 if one_d else torch.bfloat16, nbytes, kind)
                order.append((file, key, one_d))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for file, key, one_d in order:
        with safe_open(str(file), framework="pt") as f:
            t = f.get_tensor(key)
        data = t.float().numpy() if one_d else t.view(torch.int16).numpy().view("uint16")
        writer.write_tensor_data(data)
    writer.close()
    for name, ftype in (("Q4_0", 2), ("Q4_K_M", 15)):
        quantize_gguf(str(out), str(out.with_suffix(f".{name}.gguf")), ftype)
