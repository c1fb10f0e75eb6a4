"""Choosing the model, device and dtype, checking memory, and loading weights (torch lives here)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, UsageError
from llmcli.modelfs.checkpoint import DTYPE_BYTES, read_checkpoint
from llmcli.modelfs.config import geometry, load_config
from llmcli.modelfs.memory import device_memory, human_bytes

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE = ("none", "int8")
ATTN = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
# Measured on the 2-core AVX2 CPU this project runs on: bf16 decodes ~1.7× faster than fp32 on
# SmolLM2-135M and halves memory; fp16 matmuls on CPU are slow. See docs/generate.md.
CPU_AUTO_DTYPE = "bfloat16"


@dataclass
class ModelSource:
    """Where the weights come from: `path` is always a transformers directory."""

    path: Path
    label: str  # what the user named (a path, a .gguf file, or "default")
    gguf: Path | None = None


def progress_printer(enabled: bool):
    def show(message: str) -> None:
        if enabled:
            sys.stderr.write(f"llmcli: {message}…\n")
            sys.stderr.flush()

    return show


def resolve_model(arg: str | None, verbose_progress: bool, revision: str | None = None) -> ModelSource:
    """--model, else $LLMCLI_MODEL, else the embedded default; GGUF files go through the cache."""
    from llmcli.default_model import default_gguf, ensure_converted
    from llmcli.modelfs.locate import locate

    name = arg or os.environ.get("LLMCLI_MODEL") or None
    progress = progress_printer(verbose_progress)
    if name is None:
        gguf = default_gguf()
        return ModelSource(ensure_converted(gguf, _conversion_progress(progress)), "default", gguf)
    ref = locate(name, revision)
    if ref.kind == "hub":
        from llmcli.remote import download_model

        progress(f"downloading {ref.repo_id} into the Hugging Face cache")
        return ModelSource(download_model(ref.repo_id, ref.revision, verbose_progress), name)
    if ref.kind == "gguf":
        return ModelSource(ensure_converted(ref.path, _conversion_progress(progress)), name, ref.path)
    return ModelSource(ref.path, name)


def _conversion_progress(progress):
    def show(step: str) -> None:
        progress(f"first use of this GGUF: {step} (once; later runs use the cache)")

    return show


def resolve_device(requested: str) -> str:
    import torch

    req = requested.strip().lower()
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
            try:
                index = int(req.split(":", 1)[1])
            except ValueError:
                raise UsageError(f"--device {requested}: expected cuda:N") from None
            if index < 0 or index >= torch.cuda.device_count():
                raise LlmcliError(
                    f"device {requested} does not exist: {torch.cuda.device_count()} CUDA device(s)",
                    hint="use --device cuda:0",
                )
        return req
    raise UsageError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {requested!r}")


def resolve_dtype(requested: str, device: str, config: dict[str, Any], prefill_only: bool = False) -> str:
    req = requested.strip().lower()
    if req not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {requested!r}")
    if req != "auto":
        return req
    if device == "cpu":
        # bf16 wins for token-by-token decoding; for a single pass over a whole text float32's matmuls are
        # about 3× faster on CPUs without native bf16 (see docs/performance.md).
        return "float32" if prefill_only else CPU_AUTO_DTYPE
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
    return {} if attn == "auto" else {"attn_implementation": attn}


def check_speed_options(quantize: str, compile_: bool) -> None:
    """Combinations measured to lose (docs/performance.md) are refused rather than run slowly."""
    if compile_ and quantize == "int8":
        raise UsageError(
            "--compile and --quantize int8 do not combine: torch's dynamic int8 layers split the compiled graph "
            "(measured slower than int8 alone); pick one"
        )


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


def refuse_custom_code(config: dict[str, Any], model_dir: Path, trust_remote_code: bool) -> None:
    """Code shipped in a model directory runs only when the user says so on the command line."""
    if "auto_map" in config and not trust_remote_code:
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
        return info


def load(
    source: ModelSource,
    device_req: str,
    dtype_req: str,
    trust_remote_code: bool,
    allow_pickle: bool,
    memory_check: bool,
    show_progress: bool,
    quantize: str = "none",
    prefill_only: bool = False,
    adapter: Path | None = None,
    merge: bool = False,
    attn: str = "auto",
    threads: int | None = None,
) -> Loaded:
    from llmcli.arch import quiet_transformers

    config = load_config(source.path)
    problems = geometry(config).problems
    if problems:
        raise LlmcliError(problems[0].removeprefix("config.json: "), path=source.path / "config.json")
    refuse_custom_code(config, source.path, trust_remote_code)
    ckpt = read_checkpoint(source.path)
    if ckpt.kind == "pickle" and not allow_pickle:
        raise LlmcliError(
            f"only pickle weights ({', '.join(ckpt.pickle_files)}); loading them can run arbitrary code",
            path=source.path,
            hint="convert to safetensors, or pass --allow-pickle if you trust the files",
        )
    if ckpt.kind == "none":
        raise LlmcliError("no weights here (no *.safetensors files)", path=source.path)
    quiet_transformers()
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device_req)
    dtype = resolve_dtype(dtype_req, device, config, prefill_only)
    if quantize not in QUANTIZE:
        raise UsageError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if quantize == "int8":
        if device != "cpu":
            raise UsageError("--quantize int8 is torch's dynamic int8 for CPU; on a GPU use --dtype bfloat16")
        if dtype_req not in ("auto", "float32"):
            raise UsageError("--quantize int8 computes in float32; drop --dtype")
        dtype = "float32"
    if attn not in ATTN:
        raise UsageError(f"--attn must be one of {', '.join(ATTN)}, got {attn!r}")
    check_memory(source.path, dtype, device, force=not memory_check)
    chosen = attn_kwargs(attn)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    status = _load_status(show_progress, source)
    started = time.perf_counter()  # weights and tokenizer only: imports are not part of loading
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.path), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            str(source.path),
            dtype=getattr(torch, dtype),
            device_map=device,
            trust_remote_code=trust_remote_code,
            use_safetensors=ckpt.kind == "safetensors",
            **chosen,
        )
    except torch.cuda.OutOfMemoryError:
        raise LlmcliError(
            f"out of memory on {device} while loading", path=source.path, hint="try --dtype bfloat16 or --device cpu"
        ) from None
    except ImportError as exc:  # e.g. --attn flash_attention_2 without the flash_attn package
        raise LlmcliError(f"--attn {attn}: {' '.join(str(exc).split())[:300]}", path=source.path) from None
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise LlmcliError(f"cannot load the model: {' '.join(str(exc).split())[:300]}", path=source.path) from None
    finally:
        status()
    model.eval()
    if adapter is not None:
        model = apply_adapter(model, adapter, merge)
    if quantize == "int8":
        model = quantize_int8(model)
    if attn == "auto" and device.startswith("cuda"):
        # With cuDNN's SDPA backend a decoding step took ~65 ms (H200, 7B) until its key length had been seen
        # once, i.e. for the whole of a one-shot run; 34 ms without it (docs/performance.md, CUDA).
        torch.backends.cuda.enable_cudnn_sdp(False)
    seconds = time.perf_counter() - started
    return Loaded(model, tokenizer, device, dtype, seconds, source, config, quantize, attn)


def apply_adapter(model: Any, adapter: Path, merge: bool) -> Any:
    """A PEFT LoRA adapter on top of the loaded model; merged into the weights with `merge`."""
    from llmcli.adapter_report import ADAPTER_WEIGHTS, inspect_adapter

    inspect_adapter(adapter, None)  # validates its config and safetensors header (and refuses pickle-only)
    from peft import PeftModel

    try:
        wrapped = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise LlmcliError(
            f"cannot apply the adapter: {' '.join(str(exc).split())[:300]}", path=adapter / ADAPTER_WEIGHTS
        ) from None
    wrapped.eval()
    return wrapped.merge_and_unload() if merge else wrapped


def quantize_int8(model: Any) -> Any:
    """torch's dynamic int8: Linear weights stored as int8, activations quantized per batch (fbgemm kernels)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _load_status(enabled: bool, source: ModelSource):
    """A spinner on stderr while weights load (TTY only); returns the function that stops it."""
    if not enabled:
        return lambda: None
    from rich.console import Console

    console = Console(file=sys.stderr)
    status = console.status(f"Loading {source.label} ({source.path.name})…", spinner="dots")
    status.start()
    return status.stop


def load_tokenizer(source: ModelSource, trust_remote_code: bool) -> Any:
    """Only the tokenizer: no weights, no torch model."""
    from llmcli.arch import quiet_transformers

    config = load_config(source.path)
    refuse_custom_code(config, source.path, trust_remote_code)
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source.path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise LlmcliError(f"cannot load the tokenizer: {' '.join(str(exc).split())[:300]}", path=source.path) from None
