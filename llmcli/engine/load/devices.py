"""Where a model goes and in what precision: the device and dtype that `auto` means on this machine, the
memory check before loading, and accelerate's placement over GPUs, CPU RAM and disk (--device-map)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.modelfs.checkpoint import DTYPE_BYTES, read_checkpoint
from llmcli.modelfs.memory import device_memory
from llmcli.plan import Dtype, LoadSpec, check_device
from llmcli.units import human_bytes

# Measured on the 2-core AVX2 CPU this project runs on: bf16 decodes ~1.7× faster than fp32 on
# SmolLM2-135M and halves memory; fp16 matmuls on CPU are slow. See docs/generate.md.
CPU_AUTO_DTYPE = "bfloat16"
# llmcli serve decodes many rows per step, where the balance depends on the CPU: on AVX2 float32 was the faster
# (docs/performance.md); with native bfloat16 (AVX-512 BF16 or AMX) bfloat16 was, at 1 and 16 clients alike
# (docs/quantization.md, "The CPU decides").
SERVE_CPU_DTYPE = "float32"
SERVE_NATIVE_BF16_DTYPE = "bfloat16"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (its flags, read once by engine.load.environment)."""
    from llmcli.engine.load.environment import cpu

    return any(flag in cpu()["flags"] for flag in NATIVE_BF16_FLAGS)


def serve_cpu_dtype() -> str:
    return SERVE_NATIVE_BF16_DTYPE if native_bf16() else SERVE_CPU_DTYPE


def resolve_device(requested: str) -> str:
    import torch

    req = check_device(requested)
    if req == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if req == "cpu":
        return "cpu"
    if req == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise LlmcliError("device mps is not available on this machine", hint="use --device cpu")
        return "mps"
    if req == "cuda" or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LlmcliError(
                f"device {requested} is not available: torch sees no CUDA GPU", hint="use --device cpu or auto"
            )
        if ":" in req:
            index = int(req.split(":", 1)[1])
            if index < 0 or index >= torch.cuda.device_count():
                raise LlmcliError(
                    f"device {requested} does not exist: {torch.cuda.device_count()} CUDA device(s)",
                    hint="use --device cuda:0",
                )
    return req


def resolve_dtype(
    requested: str, device: str, config: dict[str, Any], *, prefill_only: bool = False, serving: bool = False
) -> str:
    req = str(Dtype(requested))
    if req != "auto":
        return req
    if device == "cpu":
        # For a single pass over a whole text float32's matmuls are about 3× faster on CPUs without native bf16
        # (see docs/performance.md); for decoding, a short measurement decides (engine.load.dtype_probe), else
        # the flags: bf16 for one stream, bf16 for serve only where the CPU computes it natively.
        if prefill_only:
            return "float32"
        probe = cpu_kernel(config, dtype="auto", prepack=False, serving=serving)
        return probe["dtype"] if probe else serve_cpu_dtype() if serving else CPU_AUTO_DTYPE
    saved = config.get("torch_dtype", config.get("dtype"))
    if saved == "float16":  # a float16 checkpoint's values may not survive bfloat16's shorter mantissa
        return "float16"
    import torch

    # bf16 by default on GPUs that have it (float32 checkpoints too: half the bytes to read per token).
    return "bfloat16" if _bf16_supported(torch, device) else "float16"


def cpu_kernel(config: dict[str, Any], *, dtype: str, prepack: bool | None, serving: bool) -> dict[str, Any] | None:
    """engine.load.dtype_probe's choice of dtype and product for this model's shape among those `dtype` ("auto" or
    one) and `prepack` (None: either product) leave; None when turned off, shapeless or nothing is left to choose."""
    from llmcli.engine.load import dtype_probe

    dtypes = dtype_probe.CANDIDATES if dtype == "auto" else tuple({dtype} & set(dtype_probe.CANDIDATES))
    products = dtype_probe.PRODUCTS if prepack is None else ("onednn",) if prepack else ("plain",)
    if len(dtypes) * len(products) < 2 or not dtype_probe.enabled():
        return None
    record = dtype_probe.measured(config, rows=16 if serving else 1)
    return None if record is None else dtype_probe.chosen(record, dtypes=dtypes, products=products)


def _bf16_supported(torch: Any, device: str) -> bool:
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return True


def check_memory(model_dir: Path, dtype: str, device: str, force: bool, *, quantize: str = "none",
                 group_size: int | None = None) -> int:  # fmt: skip
    """Refuse, before loading, weights that cannot fit in the device's free memory. Returns the bytes: a
    quantized layer at what its layer holds a weight (engine.quant.schemes), at `group_size` (default 32)."""
    from llmcli.engine.quant.choice import DEFAULT_GROUP_SIZE, HEAD_SCHEME
    from llmcli.engine.quant.schemes import SCHEMES

    ckpt = read_checkpoint(model_dir)
    if ckpt.kind == "pickle":
        return 0
    per_param = DTYPE_BYTES.get({"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[dtype], 2)
    scheme = SCHEMES.get(quantize)
    quantized = scheme.bytes_per_weight(group_size or DEFAULT_GROUP_SIZE) if scheme is not None else None
    head = SCHEMES[HEAD_SCHEME].bytes_per_weight(group_size or DEFAULT_GROUP_SIZE)

    def size(name: str, t: Any) -> float:
        if quantized is not None and len(t.shape) == 2 and _output_layer(name):
            return t.numel * head  # an untied output layer (a tied one is not in the file)
        if quantized is not None and len(t.shape) == 2 and not _embedding_like(name):
            return t.numel * quantized
        return t.numel * (per_param if t.dtype in ("F32", "F16", "BF16", "F64") else DTYPE_BYTES.get(t.dtype, 1))

    need = int(sum(size(name, t) for name, t in ckpt.tensors.items()))
    if force:
        return need
    dev = device_memory(device)
    if need > dev["free_bytes"]:
        raise LlmcliError(
            f"the weights need {human_bytes(need)} in {dtype} but {dev['device']} has "
            f"{human_bytes(dev['free_bytes'])} free",
            path=model_dir,
            hint="try --dtype bfloat16, another --device, or --no-memory-check to try anyway",
        )
    return need


def _embedding_like(name: str) -> bool:
    """Tensors that stay in float under int4/int8 (engine.quant.choice), told apart by name before loading."""
    return any(part in name for part in ("embed", "wte", "wpe"))


def _output_layer(name: str) -> bool:
    """The output layer's tensor, quantized in engine.quant.choice.HEAD_SCHEME when it has one of its own."""
    return any(part in name for part in ("lm_head", "output.weight"))


def placement_kwargs(spec: LoadSpec, device: str) -> dict[str, Any]:
    """from_pretrained's device arguments: one device, or accelerate's placement over GPUs, CPU and disk."""
    if spec.device_map is None:
        return {"device_map": device}
    from llmcli.engine.meta.placement import accelerate_limits
    from llmcli.plan import parse_max_memory

    out: dict[str, Any] = {"device_map": str(spec.device_map)}
    if spec.max_memory:
        out["max_memory"] = accelerate_limits(parse_max_memory(spec.max_memory))
    if spec.offload_dir is not None:
        spec.offload_dir.mkdir(parents=True, exist_ok=True)
        out["offload_folder"] = str(spec.offload_dir)
    return out


def input_device(model: Any) -> Any:
    """Where the token ids go: the model's device, or under a placement the embedding's (a layer offloaded to
    disk sits on the meta device, and accelerate's hooks bring it in from CPU RAM)."""
    mapping = getattr(model, "hf_device_map", None)
    if not mapping or len(mapping) == 1 and "" in mapping and mapping[""] not in ("disk", "cpu"):
        return model.device
    from llmcli.engine.meta.placement import device_name

    where = next((v for k, v in mapping.items() if k.endswith("embed_tokens")), next(iter(mapping.values())))
    return "cpu" if where in ("disk", "cpu") else device_name(where)


def placement(model: Any) -> dict[str, int] | None:
    """How many modules accelerate put on each device (cpu, cuda:N, disk), or None for one device."""
    mapping = getattr(model, "hf_device_map", None)
    if not mapping or len(set(mapping.values())) < 2 and "disk" not in mapping.values():
        return None
    from collections import Counter

    from llmcli.engine.meta.placement import device_name

    return dict(Counter(device_name(where) for where in mapping.values()))
