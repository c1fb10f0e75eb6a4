"""What a command asks of the engine, as plain data checked before any work: the load spec and the
generation plan, their choices (Enums, so that Typer rejects a typo at parse time) and the one validator
for combinations of flags. Nothing here imports torch or reads a model file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from llmcli.errors import UsageError


class Dtype(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Quantize(StrEnum):
    none = "none"
    int8 = "int8"


class Attn(StrEnum):
    auto = "auto"
    sdpa = "sdpa"
    eager = "eager"
    flash_attention_2 = "flash_attention_2"
    flash_attention_3 = "flash_attention_3"
    flex_attention = "flex_attention"


def check_device(text: str) -> str:
    """auto, cpu, mps, cuda or cuda:N, by spelling alone (whether it exists is the engine's question)."""
    req = text.strip().lower()
    if req in ("auto", "cpu", "mps", "cuda"):
        return req
    if req.startswith("cuda:"):
        if not req[5:].isdigit():
            raise UsageError(f"--device {text}: expected cuda:N")
        return req
    raise UsageError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {text!r}")


@dataclass(frozen=True)
class LoadSpec:
    """How to load a model: `engine.loader.load(source, spec)`."""

    device: str = "auto"
    dtype: Dtype = Dtype.auto
    quantize: Quantize = Quantize.none
    attn: Attn = Attn.auto
    threads: int | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    memory_check: bool = True
    prefill_only: bool = False  # one forward pass (next-token, score): float32 on CPU
    adapter: Path | None = None
    merge: bool = False
    show_progress: bool = False


@dataclass(frozen=True)
class GenerationPlan:
    """One generate() call's settings: the keyword arguments and what llmcli does around them."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    logprobs: int | None = None  # per-token log-probabilities with the top N alternatives


def check_combinations(
    *,
    spec: LoadSpec,
    kwargs: dict[str, Any] | None = None,
    logprobs: int | None = None,
    adapter_given: bool = False,
) -> None:
    """Combinations that cannot work, or were measured to lose, are usage errors before anything loads."""
    kwargs = kwargs or {}
    check_device(spec.device)
    if spec.merge and not adapter_given:
        raise UsageError("--merge goes with --adapter")
    if spec.quantize == Quantize.int8:
        if kwargs.get("cache_implementation") == "static" and "compile_config" in kwargs:
            raise UsageError(
                "--compile and --quantize int8 do not combine: torch's dynamic int8 layers split the compiled "
                "graph (measured slower than int8 alone); pick one"
            )
        if spec.device.startswith(("cuda", "mps")):
            raise UsageError("--quantize int8 is torch's dynamic int8 for CPU; on a GPU use --dtype bfloat16")
        if spec.dtype not in (Dtype.auto, Dtype.float32):
            raise UsageError("--quantize int8 computes in float32; drop --dtype")
    if logprobs is not None and (kwargs.get("num_beams") or 1) > 1:
        raise UsageError("--logprobs works with greedy decoding and sampling, not with beam search")
