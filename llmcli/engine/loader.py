"""Choosing the model, device and dtype, checking memory, and loading weights (torch lives here)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.engine.arch import quiet_transformers
from llmcli.errors import LlmcliError, UsageError, squash
from llmcli.modelfs.adapter import ADAPTER_WEIGHTS, read_adapter
from llmcli.modelfs.checkpoint import DTYPE_BYTES, read_checkpoint
from llmcli.modelfs.config import geometry, load_config
from llmcli.modelfs.memory import device_memory
from llmcli.modelfs.source import ModelSource
from llmcli.output import spinner
from llmcli.plan import Attn, Dtype, LoadSpec, Quantize, check_device
from llmcli.units import human_bytes

# Measured on the 2-core AVX2 CPU this project runs on: bf16 decodes ~1.7× faster than fp32 on
# SmolLM2-135M and halves memory; fp16 matmuls on CPU are slow. See docs/generate.md.
CPU_AUTO_DTYPE = "bfloat16"
# llmcli serve decodes many rows per step, where the balance differs: measured in docs/performance.md.
SERVE_CPU_DTYPE = "float32"


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
        # bf16 wins for token-by-token decoding; for a single pass over a whole text float32's matmuls are
        # about 3× faster on CPUs without native bf16 (see docs/performance.md).
        return "float32" if prefill_only else SERVE_CPU_DTYPE if serving else CPU_AUTO_DTYPE
    saved = config.get("torch_dtype", config.get("dtype"))
    if saved == "float16":  # a float16 checkpoint's values may not survive bfloat16's shorter mantissa
        return "float16"
    import torch

    # bf16 by default on GPUs that have it (float32 checkpoints too: half the bytes to read per token).
    return "bfloat16" if _bf16_supported(torch, device) else "float16"


def _bf16_supported(torch: Any, device: str) -> bool:
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return True


def attn_kwargs(attn: str) -> dict[str, str]:
    """from_pretrained's `attn_implementation`, left out under auto so that transformers picks."""
    return {} if attn == "auto" else {"attn_implementation": str(attn)}


def check_memory(model_dir: Path, dtype: str, device: str, force: bool) -> int:
    """Refuse, before loading, weights that cannot fit in the device's free memory. Returns the bytes."""
    ckpt = read_checkpoint(model_dir)
    if ckpt.kind == "pickle":
        return 0
    per_param = DTYPE_BYTES.get({"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[dtype], 2)
    need = int(
        sum(
            t.numel * (per_param if t.dtype in ("F32", "F16", "BF16", "F64") else DTYPE_BYTES.get(t.dtype, 1))
            for t in ckpt.tensors.values()
        )
    )
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


def trusts_code(spec: LoadSpec) -> bool:
    return spec.trust_remote_code or spec.trust_remote_code_digest is not None


def check_remote_code(config: dict[str, Any], model_dir: Path, spec: LoadSpec) -> None:
    """Before anything of the directory is imported: a pinned digest must match the files that would run;
    --trust-remote-code alone says which digest they have, to pin it next time; without either, no code."""
    from llmcli.modelfs.remote_code import check_pin, find_remote_code, refuse_code_loading_keys, remember_digest

    if not trusts_code(spec):
        refuse_code_loading_keys(model_dir)
        refuse_custom_code(config, model_dir, False)
        return
    if spec.trust_remote_code_digest is not None:
        remember_digest(check_pin(model_dir, spec.trust_remote_code_digest))
        return
    code = find_remote_code(model_dir)
    if code is not None and code.digest is not None:
        from llmcli.output import warn

        remember_digest(code)
        warn(f"running the code of {len(code.files)} file(s) in {model_dir}, digest {code.digest} "
             f"(pin it: --trust-remote-code-digest {code.digest})")  # fmt: skip


def refuse_custom_code(config: dict[str, Any], model_dir: Path, trust_remote_code: bool) -> None:
    """Code shipped in a model directory runs only when the user says so on the command line. Without it,
    a model_type that transformers knows loads through transformers' own classes, as transformers does."""
    if "auto_map" in config and not trust_remote_code:
        from llmcli.engine.arch import native_model_type
        from llmcli.output import warn

        if native_model_type(config):
            warn(
                f"{model_dir / 'config.json'}: auto_map names custom code; using transformers' own "
                f"{config.get('model_type')} classes instead (pass --trust-remote-code to run the custom code)"
            )
            return
        raise LlmcliError(
            "this model needs custom code from its directory (auto_map in config.json); llmcli does not run it",
            path=model_dir / "config.json",
            hint="pass --trust-remote-code if you trust its author",
        )


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    load_seconds: float
    source: ModelSource
    config: dict[str, Any]
    quantize: str = "none"
    attn_request: str = "auto"
    prepacked_bytes: int = 0  # the copy of the linear weights reordered for oneDNN at load (engine.prepack)
    split_lone_rows: bool = False  # a lone row's products sliced across the threads (engine.prepack)

    @property
    def prepacked(self) -> bool:
        return self.prepacked_bytes > 0

    @property
    def attn(self) -> str | None:
        return getattr(getattr(self.model, "config", None), "_attn_implementation", None)

    def describe(self) -> dict[str, Any]:
        """The `model` object of --json outputs."""
        info = {
            "path": str(self.source.path),
            "source": self.source.label,
            "dtype": self.dtype,
            "device": self.device,
            "quantize": None if self.quantize == "none" else self.quantize,
            "attn_implementation": self.attn,
        }
        if self.source.gguf is not None:
            info["gguf"] = str(self.source.gguf)
        spread = placement(self.model)
        if spread is not None:
            info["placement"] = spread
        return info


def load(source: ModelSource, spec: LoadSpec) -> Loaded:
    """Checks the files (custom code, pickle, memory), then loads the tokenizer and the weights."""
    config = load_config(source.path)
    problems = geometry(config).problems
    if problems:
        raise LlmcliError(problems[0].removeprefix("config.json: "), path=source.path / "config.json")
    check_remote_code(config, source.path, spec)
    ckpt = read_checkpoint(source.path)
    if ckpt.kind == "pickle" and not spec.allow_pickle:
        raise LlmcliError(
            f"only pickle weights ({', '.join(ckpt.pickle_files)}); loading them can run arbitrary code",
            path=source.path,
            hint="convert to safetensors, or pass --allow-pickle if you trust the files",
        )
    if ckpt.kind == "none":
        raise LlmcliError("no weights here (no *.safetensors files)", path=source.path)
    if spec.adapter is not None:
        read_adapter(spec.adapter)  # its config and safetensors header, before any weight loads
    quiet_transformers()
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device, config, prefill_only=spec.prefill_only, serving=spec.serving)
    if spec.quantize == Quantize.int8:
        if device != "cpu":
            raise UsageError("--quantize int8 is torch's dynamic int8 for CPU; on a GPU use --dtype bfloat16")
        dtype = "float32"
    if spec.device_map is None:  # a placement spills what does not fit: nothing to check up front
        check_memory(source.path, dtype, device, force=not spec.memory_check)
    with spinner(f"Loading {source.label} ({source.path.name})…", enabled=spec.show_progress):
        started = time.perf_counter()  # weights and tokenizer only: imports are not part of loading
        tokenizer, model = _from_pretrained(source, spec, device, dtype, ckpt.kind)
        model = _finish(model, spec, device)
        packed = _prepack(model, source, spec, device=device, dtype=dtype)
        seconds = time.perf_counter() - started
    return Loaded(model, tokenizer, device, dtype, seconds, source, config, str(spec.quantize), str(spec.attn),
                  prepacked_bytes=packed.bytes, split_lone_rows=packed.split_lone_rows)  # fmt: skip


def _from_pretrained(source: ModelSource, spec: LoadSpec, device: str, dtype: str, kind: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = trusts_code(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.path), trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(
            str(source.path),
            dtype=getattr(torch, dtype),
            trust_remote_code=trust,
            use_safetensors=kind == "safetensors",
            **placement_kwargs(spec, device),
            **attn_kwargs(spec.attn),
        )
    except torch.cuda.OutOfMemoryError:
        raise LlmcliError(
            f"out of memory on {device} while loading", path=source.path, hint="try --dtype bfloat16 or --device cpu"
        ) from None
    except ImportError as exc:  # e.g. --attn flash_attention_2 without the flash_attn package
        raise LlmcliError(f"--attn {spec.attn}: {squash(exc)}", path=source.path) from None
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise LlmcliError(f"cannot load the model: {squash(exc)}", path=source.path) from None
    return tokenizer, model


def placement_kwargs(spec: LoadSpec, device: str) -> dict[str, Any]:
    """from_pretrained's device arguments: one device, or accelerate's placement over GPUs, CPU and disk."""
    if spec.device_map is None:
        return {"device_map": device}
    from llmcli.engine.placement import accelerate_limits
    from llmcli.plan import parse_max_memory

    out: dict[str, Any] = {"device_map": str(spec.device_map)}
    if spec.max_memory:
        out["max_memory"] = accelerate_limits(parse_max_memory(spec.max_memory))
    if spec.offload_dir is not None:
        spec.offload_dir.mkdir(parents=True, exist_ok=True)
        out["offload_folder"] = str(spec.offload_dir)
    return out


def last_logits_only(model: Any, count: int) -> dict[str, int]:
    """forward()'s `logits_to_keep=count` where the model takes it (most causal LMs): logits for the last
    `count` positions only, instead of positions × vocabulary."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"logits_to_keep": count} if "logits_to_keep" in inspect.signature(inner.forward).parameters else {}


def input_device(model: Any) -> Any:
    """Where the token ids go: the model's device, or under a placement the embedding's (a layer offloaded to
    disk sits on the meta device, and accelerate's hooks bring it in from CPU RAM)."""
    mapping = getattr(model, "hf_device_map", None)
    if not mapping or len(mapping) == 1 and "" in mapping and mapping[""] not in ("disk", "cpu"):
        return model.device
    from llmcli.engine.placement import device_name

    where = next((v for k, v in mapping.items() if k.endswith("embed_tokens")), next(iter(mapping.values())))
    return "cpu" if where in ("disk", "cpu") else device_name(where)


def placement(model: Any) -> dict[str, int] | None:
    """How many modules accelerate put on each device (cpu, cuda:N, disk), or None for one device."""
    mapping = getattr(model, "hf_device_map", None)
    if not mapping or len(set(mapping.values())) < 2 and "disk" not in mapping.values():
        return None
    from collections import Counter

    from llmcli.engine.placement import device_name

    return dict(Counter(device_name(where) for where in mapping.values()))


def _finish(model: Any, spec: LoadSpec, device: str) -> Any:
    """Evaluation mode, then the adapter, int8 and the CUDA attention default."""
    model.eval()
    if spec.adapter is not None:
        model = apply_adapter(model, spec.adapter, merge=spec.merge)
    if spec.quantize == Quantize.int8:
        model = quantize_int8(model)
    if spec.attn == Attn.auto and device.startswith("cuda"):
        import torch

        # With cuDNN's SDPA backend a decoding step took ~65 ms (H200, 7B) until its key length had been seen
        # once, i.e. for the whole of a one-shot run; 34 ms without it (docs/performance.md, CUDA).
        torch.backends.cuda.enable_cudnn_sdp(False)
    return model


def _prepack(model: Any, source: ModelSource, spec: LoadSpec, *, device: str, dtype: str) -> Any:
    """serve's CPU float32 kernel (engine.prepack) where asked for, where it applies and the memory holds it:
    what was prepacked (prepack.NOTHING where nothing was)."""
    from llmcli.engine import prepack

    if not spec.prepack or not prepack.applies(device=device, dtype=dtype):
        return prepack.NOTHING
    why = prepack.refusal(model, available=device_memory(device)["free_bytes"])
    if why is not None:
        from llmcli.output import warn

        warn(f"{source.path}: linear weights not prepacked for oneDNN: {why}")
        return prepack.NOTHING
    return prepack.prepack(model, split_lone_rows=spec.split_lone_rows)


def apply_adapter(model: Any, adapter: Path, *, merge: bool) -> Any:
    """A PEFT LoRA adapter on top of the loaded model; merged into the weights with `merge`."""
    from peft import PeftModel

    try:
        wrapped = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise LlmcliError(f"cannot apply the adapter: {squash(exc)}", path=adapter / ADAPTER_WEIGHTS) from None
    wrapped.eval()
    return wrapped.merge_and_unload() if merge else wrapped


def quantize_int8(model: Any) -> Any:
    """torch's dynamic int8: Linear weights stored as int8, activations quantized per batch (fbgemm kernels)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_tokenizer(source: ModelSource, *, spec: LoadSpec | None = None) -> Any:
    """Only the tokenizer: no weights, no torch model."""
    spec = spec or LoadSpec()
    config = load_config(source.path)
    check_remote_code(config, source.path, spec)
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source.path), trust_remote_code=trusts_code(spec))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise LlmcliError(f"cannot load the tokenizer: {squash(exc)}", path=source.path) from None
