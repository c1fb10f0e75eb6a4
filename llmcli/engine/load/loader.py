"""Loading a model: the directory checked (config, custom code, pickle weights, memory), then the tokenizer and
the weights through from_pretrained, with an adapter, a quantization scheme or serve's prepacked kernel on top."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.engine.load.code_trust import check_remote_code, trusts_code
from llmcli.engine.load.devices import (
    check_memory,
    cpu_kernel,
    placement,
    placement_kwargs,
    resolve_device,
    resolve_dtype,
)
from llmcli.errors import LlmcliError, UsageError, squash
from llmcli.modelfs.adapter import ADAPTER_WEIGHTS, read_adapter
from llmcli.modelfs.checkpoint import read_checkpoint
from llmcli.modelfs.compile_cache import use_llmcli_cache
from llmcli.modelfs.config import geometry, load_config
from llmcli.modelfs.memory import device_memory
from llmcli.modelfs.quantized import saved_overrides, saved_scheme
from llmcli.modelfs.source import ModelSource
from llmcli.output import spinner
from llmcli.plan import Attn, LoadSpec, Quantize
from llmcli.quiet import quiet_transformers


def attn_kwargs(attn: str) -> dict[str, str]:
    """from_pretrained's `attn_implementation`, left out under auto so that transformers picks."""
    return {} if attn == "auto" else {"attn_implementation": str(attn)}


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
    quantization: dict[str, Any] | None = None  # what int4/int8 did (engine.quant.choice.QuantChoice.describe())
    attn_request: str = "auto"
    prepacked_bytes: int = 0  # the copy of the linear weights reordered for oneDNN at load (engine.load.prepack)
    split_lone_rows: bool = False  # a lone row's products sliced across the threads (engine.load.prepack)
    dtype_choice: dict[str, Any] | None = None  # what chose the CPU dtype and product (engine.load.dtype_probe)
    adapter: Path | None = None  # the PEFT adapter on top of the files' weights

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
        if self.quantization is not None:
            info["quantization"] = self.quantization
        if self.dtype_choice is not None:
            info["dtype_choice"] = self.dtype_choice
        if self.source.gguf is not None:
            info["gguf"] = str(self.source.gguf)
        spread = placement(self.model)
        if spread is not None:
            info["placement"] = spread
        return info


def load(source: ModelSource, spec: LoadSpec) -> Loaded:
    """Checks the files (custom code, pickle, memory), then loads the tokenizer and the weights."""
    use_llmcli_cache()  # whatever compiles later (--compile, the code search) keeps its kernels in llmcli's home
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
    kernel = (  # measured where the flags leave more than one dtype or product (engine.load.dtype_probe)
        cpu_kernel(config, dtype=str(spec.dtype), prepack=spec.prepack, serving=spec.serving)
        if device == "cpu" and not spec.prefill_only
        else None
    )
    dtype = (
        kernel["dtype"]
        if kernel
        else resolve_dtype(spec.dtype, device, config, prefill_only=spec.prefill_only, serving=spec.serving)
    )
    if spec.quantize == Quantize.int8_dynamic:
        if device != "cpu":
            raise UsageError("--quantize int8-dynamic is torch's dynamic int8 for CPU; on a GPU use --quantize int8")
        dtype = "float32"
    if spec.device_map is None:  # a placement spills what does not fit: nothing to check up front
        check_memory(source.path, dtype, device, force=not spec.memory_check, quantize=str(spec.quantize),
                     group_size=spec.group_size)  # fmt: skip
    with spinner(f"Loading {source.label} ({source.path.name})…", enabled=spec.show_progress):
        started = time.perf_counter()  # weights and tokenizer only: imports are not part of loading
        tokenizer, model, choice = _weights(source, spec, config, ckpt, device=device, dtype=dtype)
        model = _finish(model, spec, device, dtype)
        packed = _prepack(model, source, spec, device=device, dtype=dtype, asked=_prepacks(spec, kernel, dtype))
        seconds = time.perf_counter() - started
    if choice is not None:
        from llmcli.engine.quant.offer import offer
        from llmcli.output import stderr_text

        stderr_text(f"{source.path.name}: {choice.summary()}")
        said = None
        if saved_scheme(config) is None:  # a saved copy's layers were only packed, not quantized
            said = offer(source.label, source.path, scheme=choice.scheme, group_size=choice.group_size,
                         seconds=choice.seconds)  # fmt: skip
        if said:
            stderr_text(said)
    return Loaded(model, tokenizer, device, dtype, seconds, source, config, str(spec.quantize),
                  None if choice is None else choice.describe(), str(spec.attn),
                  prepacked_bytes=packed.bytes, split_lone_rows=packed.split_lone_rows,
                  dtype_choice=kernel if kernel and kernel["dtype"] == dtype else None,
                  adapter=spec.adapter)  # fmt: skip


def _weights(source: ModelSource, spec: LoadSpec, config: dict[str, Any], ckpt: Any, *, device: str,
             dtype: str) -> tuple:  # fmt: skip
    """The tokenizer, the model and what quantizing did (None when nothing was): a saved quantized checkpoint,
    int4/int8 quantized while loading, or an ordinary load."""
    saved = saved_scheme(config)
    if saved is not None:
        return load_saved(source, spec, saved, ckpt, device=device, dtype=dtype, config=config)
    if weight_only(spec):
        return load_quantized(source, spec, ckpt, device=device, dtype=dtype)
    return (*_from_pretrained(source, spec, device, dtype, ckpt.kind), None)


def weight_only(spec: LoadSpec) -> bool:
    """int4 and int8: the weight-only schemes engine.quant builds while loading."""
    return spec.quantize in (Quantize.int4, Quantize.int8)


def load_saved(source: ModelSource, spec: LoadSpec, saved: tuple, ckpt: Any, *, device: str, dtype: str,
               config: dict[str, Any]) -> tuple:  # fmt: skip
    """A checkpoint `llmcli quantize` wrote: its layers built from their codes, nothing quantized again."""
    from llmcli.engine.quant import while_loading

    scheme, group = saved
    if spec.quantize not in (Quantize.none, Quantize(scheme)) or spec.group_size not in (None, group):
        raise UsageError(f"{source.path} is saved in {scheme}" + (f" (group {group})" if group else "")
                         + ": drop --quantize and --group-size")  # fmt: skip
    if spec.adapter is not None:
        raise UsageError(f"{source.path} is saved in {scheme}: an adapter needs the float weights")
    model = while_loading.empty_model(source.path, dtype=dtype, trust=trusts_code(spec), attn=attn_kwargs(spec.attn))
    why = while_loading.mismatch(model, ckpt)
    if why is not None:
        raise LlmcliError(f"cannot load the quantized checkpoint: {why}", path=source.path)
    builders = while_loading.from_saved(model, ckpt, scheme=scheme, group_size=group, device=device,
                                        overrides=saved_overrides(config))  # fmt: skip
    choice = while_loading.fill(model, source.path, ckpt, builders, scheme=scheme, group_size=group, dtype=dtype,
                                device=device)  # fmt: skip
    return load_tokenizer(source, spec=spec), model, choice


def load_quantized(source: ModelSource, spec: LoadSpec, ckpt: Any, *, device: str, dtype: str) -> tuple:
    """The tokenizer, the model with its chosen layers quantized, and the choice: quantized while loading
    (engine.quant.while_loading) where the checkpoint's names are the model's, else after an ordinary load."""
    from llmcli.engine.quant import while_loading
    from llmcli.engine.quant.apply import quantize_loaded
    from llmcli.engine.quant.choice import DEFAULT_GROUP_SIZE

    scheme = str(spec.quantize)
    group = spec.group_size or DEFAULT_GROUP_SIZE
    why = "an adapter is merged into the float weights first" if spec.adapter is not None else None
    if why is None and ckpt.kind == "safetensors":
        model = while_loading.empty_model(
            source.path, dtype=dtype, trust=trusts_code(spec), attn=attn_kwargs(spec.attn)
        )
        why = while_loading.mismatch(model, ckpt)
        if why is None:
            builders = (
                while_loading.from_float(model, scheme=scheme, group_size=group, device=device)
                if source.gguf is None
                else while_loading.from_gguf(model, source.gguf, scheme=scheme, group_size=group, device=device)
            )
            choice = while_loading.fill(model, source.path, ckpt, builders, scheme=scheme, group_size=group,
                                        dtype=dtype, device=device)  # fmt: skip
            return load_tokenizer(source, spec=spec), model, choice
    from llmcli.output import warn

    warn(f"{source.path}: quantized after a whole load in {dtype}: {why or 'not a safetensors checkpoint'}")
    tokenizer, model = _from_pretrained(source, spec, device, dtype, ckpt.kind)
    if spec.adapter is not None:
        model = apply_adapter(model.eval(), spec.adapter, merge=True)
    choice = quantize_loaded(model, scheme=scheme, group_size=group, device=device)
    return tokenizer, model, choice


def _from_pretrained(source: ModelSource, spec: LoadSpec, device: str, dtype: str, kind: str) -> tuple[Any, Any]:
    import torch
    import transformers
    from transformers import AutoTokenizer

    trust = trusts_code(spec)
    auto = "AutoModelForSequenceClassification" if spec.sequence_classification else "AutoModelForCausalLM"
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.path), trust_remote_code=trust)
        model = getattr(transformers, auto).from_pretrained(
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


def vocab_size(model: Any) -> int | None:
    """The rows of the model's output layer: the token ids it can score (from its text config)."""
    return getattr(model.config.get_text_config(), "vocab_size", None)


def last_logits_only(model: Any, count: int) -> dict[str, int]:
    """forward()'s `logits_to_keep=count` where the model takes it (most causal LMs): logits for the last
    `count` positions only, instead of positions × vocabulary."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"logits_to_keep": count} if "logits_to_keep" in inspect.signature(inner.forward).parameters else {}


def _finish(model: Any, spec: LoadSpec, device: str, dtype: str) -> Any:
    """Evaluation mode, then the adapter, int8-dynamic and the attention defaults of CUDA and the CPU."""
    model.eval()
    if spec.adapter is not None and not weight_only(spec):
        model = apply_adapter(model, spec.adapter, merge=spec.merge)
    if spec.quantize == Quantize.int8_dynamic:
        from llmcli.engine.quant.int8_dynamic import quantize_int8

        model = quantize_int8(model)
    if spec.attn == Attn.auto and device.startswith("cuda"):
        import torch

        # With cuDNN's SDPA backend a decoding step took ~65 ms (H200, 7B) until its key length had been seen
        # once, i.e. for the whole of a one-shot run; 34 ms without it (docs/performance.md, CUDA).
        torch.backends.cuda.enable_cudnn_sdp(False)
    if not spec.prefill_only:  # a decoding step's attention in float32 (engine.load.cpu_attention)
        from llmcli.engine.load import cpu_attention

        cpu_attention.install(model, device=device, dtype=dtype, requested=str(spec.attn))
    return model


def _prepacks(spec: LoadSpec, kernel: dict[str, Any] | None, dtype: str) -> bool:
    """Whether the linear weights are to be reordered for oneDNN: as measured (engine.load.dtype_probe), as the
    spec says, or without a measurement serve's float32 default."""
    if kernel is not None:
        return kernel["product"] == "onednn"
    return spec.prepack if spec.prepack is not None else spec.serving and dtype == "float32"


def _prepack(model: Any, source: ModelSource, spec: LoadSpec, *, device: str, dtype: str, asked: bool) -> Any:
    """The CPU's oneDNN kernel (engine.load.prepack) where asked for, where it applies and the memory holds it:
    what was prepacked (prepack.NOTHING where nothing was)."""
    from llmcli.engine.load import prepack

    if not asked or not prepack.applies(device=device, dtype=dtype):
        return prepack.NOTHING
    why = prepack.refusal(model, available=device_memory(device)["free_bytes"])
    if why is not None:
        if spec.prepack:  # a measured default that does not fit is not worth a line; a flag's refusal is
            from llmcli.output import warn

            warn(f"{source.path}: linear weights not prepacked for oneDNN: {why}")
        return prepack.NOTHING
    from llmcli.engine.load.worker import on_engine

    # on the thread that will multiply by them (engine.load.worker: reordered elsewhere, they decode slower)
    return on_engine(prepack.prepack, model, split_lone_rows=spec.split_lone_rows)


def apply_adapter(model: Any, adapter: Path, *, merge: bool) -> Any:
    """A PEFT LoRA adapter on top of the loaded model; merged into the weights with `merge`."""
    from peft import PeftModel

    try:
        wrapped = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise LlmcliError(f"cannot apply the adapter: {squash(exc)}", path=adapter / ADAPTER_WEIGHTS) from None
    wrapped.eval()
    return wrapped.merge_and_unload() if merge else wrapped


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
