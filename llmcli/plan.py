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
    int4 = "int4"  # weight-only, asymmetric, per group along the inputs (engine.quant.int4)
    int8 = "int8"  # weight-only, asymmetric, per group (engine.quant.int8)
    int8_dynamic = "int8-dynamic"  # torch's dynamic int8: activations quantized too (engine.quant.int8_dynamic)


GROUP_SIZES = (32, 64, 128, 256)


def check_group_size(size: int | None, quantize: Quantize) -> None:
    """--group-size: a power of two from 32 to 256, and only with --quantize int4 or int8."""
    if size is None:
        return
    if size not in GROUP_SIZES:
        raise UsageError(f"--group-size {size}: expected one of {', '.join(map(str, GROUP_SIZES))}")
    if quantize not in (Quantize.int4, Quantize.int8):
        raise UsageError("--group-size goes with --quantize int4 or int8")


class Attn(StrEnum):
    auto = "auto"
    sdpa = "sdpa"
    eager = "eager"
    flash_attention_2 = "flash_attention_2"
    flash_attention_3 = "flash_attention_3"
    flex_attention = "flex_attention"


class DeviceMap(StrEnum):
    """accelerate's big-model placement: layers spread over the GPUs, then CPU RAM, then disk."""

    auto = "auto"
    balanced = "balanced"
    balanced_low_0 = "balanced_low_0"
    sequential = "sequential"


MEMORY_UNITS = ("KB", "MB", "GB", "TB", "KIB", "MIB", "GIB", "TIB", "B")


def parse_max_memory(text: str) -> dict[str, str]:
    """'cpu=8GiB,cuda:0=20GiB' → accelerate's max_memory ({"cpu": "8GiB", 0: ...} keys stay strings here)."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        device, _, amount = item.partition("=")
        device, amount = device.strip().lower(), amount.strip()
        if device not in ("cpu", "mps", "disk") and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise UsageError(f"--max-memory {text}: '{device}' is not cpu, mps or cuda:N")
        number = amount.upper().rstrip("".join(sorted({c for u in MEMORY_UNITS for c in u})))
        unit = amount[len(number) :].upper()
        if not number or unit not in MEMORY_UNITS or not number.replace(".", "", 1).isdigit():
            raise UsageError(f"--max-memory {text}: '{amount}' is not an amount such as 8GiB or 500MB")
        out[device] = amount
    if not out:
        raise UsageError("--max-memory: expected DEVICE=AMOUNT[,DEVICE=AMOUNT], e.g. cpu=8GiB,cuda:0=20GiB")
    return out


def memory_amount(amount: str) -> int:
    """'8GiB' → bytes (GiB: 1024³, GB: 1000³, as accelerate reads them); an amount parse_max_memory accepted."""
    number = amount.upper().rstrip("".join(sorted({c for u in MEMORY_UNITS for c in u})))
    unit = amount[len(number) :].upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}.get(unit, 1)  # fmt: skip
    return int(float(number) * scale)


def parse_amount(text: str, *, option: str) -> int:
    """One amount of memory ('4GiB', '500MB') → bytes, or a usage error naming the option."""
    number = text.strip().upper().rstrip("".join(sorted({c for u in MEMORY_UNITS for c in u})))
    unit = text.strip()[len(number) :].upper()
    if not number or unit not in MEMORY_UNITS or not number.replace(".", "", 1).isdigit() or float(number) <= 0:
        raise UsageError(f"{option} {text}: expected an amount such as 4GiB or 500MB")
    return memory_amount(text.strip())


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
    """How to load a model: `engine.load.loader.load(source, spec)`."""

    device: str = "auto"
    dtype: Dtype = Dtype.auto
    quantize: Quantize = Quantize.none
    group_size: int | None = None  # with int4/int8: weights per scale and zero (None: engine.quant's default)
    attn: Attn = Attn.auto
    threads: int | None = None
    trust_remote_code: bool = False
    trust_remote_code_digest: str | None = None  # run the code only if it hashes to this (implies trust)
    allow_pickle: bool = False
    memory_check: bool = True
    prefill_only: bool = False  # one forward pass (next-token, score): float32 on CPU
    sequence_classification: bool = False  # a reward model's head (AutoModelForSequenceClassification), not an LM's
    serving: bool = False  # llmcli serve: batched decoding, whose CPU default dtype is measured apart
    # on the CPU: linear weights reordered for oneDNN at load (engine.load.prepack); None: where it measures faster
    prepack: bool | None = False
    split_lone_rows: bool = False  # with prepack: a one-row product's weight sliced across the threads
    adapter: Path | None = None
    merge: bool = False
    show_progress: bool = False
    device_map: DeviceMap | None = None  # beyond one device: accelerate places the layers
    max_memory: str | None = None  # with device_map: 'cpu=8GiB,cuda:0=20GiB'
    offload_dir: Path | None = None  # with device_map: where layers that fit nowhere else go


CONSTRAINT_FLAGS = {"json_schema": "--json-schema", "json_object": "--json-object", "regex": "--regex",
                    "grammar": "--grammar"}  # fmt: skip


@dataclass(frozen=True)
class Constraint:
    """Structured output: what every output must match (engine.generate.constraints compiles it)."""

    kind: str  # "json_schema", "json_object", "regex" or "grammar"
    source: str  # the schema (JSON text), the pattern or the EBNF text; "" for json_object

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source}

    def accepts_document(self, text: str) -> bool:
        """For the JSON kinds, a document that a strict parser reads and the schema accepts; True otherwise.

        Not redundant after the grammar: xgrammar 0.2.8 lets control characters (U+0000–U+001F) into strings
        that carry maxLength, which JSON forbids; and another engine's output was never checked at all.
        """
        if self.kind not in ("json_schema", "json_object"):
            return True
        import json

        try:
            document = json.loads(text, parse_constant=_not_json)
        except ValueError:  # JSONDecodeError, or NaN / Infinity, which Python reads and JSON does not have
            return False
        if self.kind == "json_object":
            return isinstance(document, dict)
        from jsonschema import Draft202012Validator

        return Draft202012Validator(json.loads(self.source)).is_valid(document)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class GenerationPlan:
    """One generate() call's settings: the keyword arguments and what llmcli does around them."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    logprobs: int | None = None  # per-token log-probabilities with the top N alternatives
    constraint: Any = None  # engine.generate.constraints.Compiled: structured output
    assistant: Any = None  # a loaded draft model for assisted decoding (generate()'s assistant_model)
    plain_step: bool = False  # --no-compile: never the compiled decoding step (engine.step), even one kept


def constraint_from(
    *, json_schema: str | None, regex: str | None, grammar: str | None, json_object: bool
) -> Constraint | None:
    """The one constraint the flags ask for, read and checked as far as it can be without the grammar engine."""
    given = [
        name
        for name, value in (
            ("--json-schema", json_schema),
            ("--regex", regex),
            ("--grammar", grammar),
            ("--json-object", json_object or None),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise UsageError(f"{given[0]} and {given[1]} both constrain the output; give one")
    if json_object:
        return Constraint("json_object", "")
    if regex is not None:
        if not regex:
            raise UsageError("--regex needs a pattern")
        return Constraint("regex", regex)
    if grammar is not None:
        from llmcli.prompts import read_file

        return Constraint("grammar", read_file(grammar))
    if json_schema is not None:
        return Constraint("json_schema", _schema_text(json_schema))
    return None


def _schema_text(arg: str) -> str:
    """--json-schema takes the schema itself (JSON) or a file holding it; it must be a valid JSON Schema."""
    import json

    from llmcli.prompts import read_file

    text = arg if arg.lstrip().startswith("{") else read_file(arg)
    where = "--json-schema" if text is arg else f"--json-schema {arg}"
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(schema, dict):
        raise UsageError(f"{where}: a JSON Schema is an object, got {type(schema).__name__}")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path) or "the top level"
        raise UsageError(f"{where}: not a valid JSON Schema at {path}: {exc.message}") from None
    return text


def check_placement(spec: LoadSpec) -> None:
    if spec.device_map is None:
        if spec.max_memory or spec.offload_dir:
            raise UsageError(f"--{'max-memory' if spec.max_memory else 'offload-dir'} goes with --device-map")
        return
    if spec.max_memory:
        parse_max_memory(spec.max_memory)
    if spec.device != "auto":
        raise UsageError("--device-map places the layers itself; drop --device")
    if spec.quantize != Quantize.none:
        raise UsageError(f"--quantize {spec.quantize} does not combine with --device-map (one device holds it)")


def check_quantize(spec: LoadSpec, *, compiled: bool = False) -> None:
    """--quantize and --group-size, by spelling and combination (before torch)."""
    check_group_size(spec.group_size, spec.quantize)
    if spec.quantize == Quantize.none:
        return
    if spec.adapter is not None and not spec.merge:
        raise UsageError(f"--quantize {spec.quantize} quantizes the base's layers, which an adapter wraps: add --merge")
    if spec.device.startswith("mps"):
        raise UsageError(f"--quantize {spec.quantize} runs on CPU and CUDA, not mps")
    if spec.quantize != Quantize.int8_dynamic:
        return
    if compiled:
        raise UsageError(
            "--compile and --quantize int8-dynamic do not combine: torch's dynamic int8 layers split the compiled "
            "graph (measured slower than int8-dynamic alone); pick one"
        )
    if spec.device.startswith("cuda"):
        raise UsageError("--quantize int8-dynamic is torch's dynamic int8 for CPU; on a GPU use --quantize int8")
    if spec.dtype not in (Dtype.auto, Dtype.float32):
        raise UsageError("--quantize int8-dynamic computes in float32; drop --dtype")


def check_combinations(
    *,
    spec: LoadSpec,
    kwargs: dict[str, Any] | None = None,
    logprobs: int | None = None,
    adapter_given: bool = False,
    constraint: Constraint | None = None,
    assistant_given: bool = False,
) -> None:
    """Combinations that cannot work, or were measured to lose, are usage errors before anything loads."""
    kwargs = kwargs or {}
    assisted = assistant_given or kwargs.get("prompt_lookup_num_tokens") is not None
    if assistant_given and kwargs.get("prompt_lookup_num_tokens") is not None:
        raise UsageError("--assistant-model and --prompt-lookup are two ways to draft tokens; pick one")
    check_device(spec.device)
    check_placement(spec)
    if spec.merge and not adapter_given:
        raise UsageError("--merge goes with --adapter")
    check_quantize(spec, compiled=kwargs.get("cache_implementation") == "static" and "compile_config" in kwargs)
    if logprobs is not None and (kwargs.get("num_beams") or 1) > 1:
        raise UsageError("--logprobs works with greedy decoding and sampling, not with beam search")
    if assisted and ((kwargs.get("num_return_sequences") or 1) > 1 or (kwargs.get("num_beams") or 1) > 1):
        raise UsageError(
            "assisted and prompt-lookup decoding make one sequence: drop --num-return-sequences/--num-beams"
        )
    if constraint is not None:
        flag = CONSTRAINT_FLAGS[constraint.kind]
        if (kwargs.get("num_beams") or 1) > 1:
            raise UsageError(f"{flag} works with greedy decoding and sampling, not with beam search")
        if kwargs.get("min_new_tokens"):
            raise UsageError(f"{flag} ends the output when its structure closes; drop --min-new-tokens")
