"""Flags → `generate()` keyword arguments: a pure function, testable without a model or torch.

Each flag is forwarded under its own `generate()` name and only when the user set it, so the model's
generation_config.json defaults survive for everything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmcli.errors import UsageError

SAMPLING_FLAGS = ("temperature", "top_p", "top_k", "min_p", "typical_p")
# Modes transformers 5 serves only by downloading code from the Hub: never reachable from llmcli.
HUB_ONLY_KEYS = {"num_beam_groups", "diversity_penalty", "custom_generate", "constraints", "force_words_ids"}
# Keys that --set may not use because a typed flag or llmcli itself owns them.
OWNED_KEYS = {"stop_strings", "streamer", "output_scores", "output_logits", "return_dict_in_generate"}


@dataclass
class DecodingFlags:
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    do_sample: bool | None = None  # True: --do-sample, False: --greedy, None: the model's default
    num_beams: int | None = None
    length_penalty: float | None = None
    early_stopping: str | None = None  # "true", "false" or "never"
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    num_return_sequences: int | None = None
    stop: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # --set key=value
    compile: bool = False  # --compile: static KV cache + torch.compile of the decoding step


def parse_set_value(text: str) -> Any:
    """`--set` values are JSON when they parse as JSON (numbers, true, lists), else plain strings."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text


def _check_range(name: str, value: float | int | None, low: float, high: float | None, low_open: bool = False) -> None:
    if value is None:
        return
    if value != value:  # NaN
        raise UsageError(f"--{name.replace('_', '-')} must be a number, got nan")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        if high is None:
            bound = f"> {low}" if low_open else f">= {low}"
        raise UsageError(f"--{name.replace('_', '-')} must be {'in ' if high is not None else ''}{bound}, got {value}")


def build_generate_kwargs(flags: DecodingFlags) -> dict[str, Any]:
    """The keyword arguments for `model.generate()`; raises UsageError on contradictions."""
    _check_range("max_new_tokens", flags.max_new_tokens, 1, None)
    _check_range("min_new_tokens", flags.min_new_tokens, 0, None)
    _check_range("temperature", flags.temperature, 0, None)
    _check_range("top_p", flags.top_p, 0, 1, low_open=True)
    _check_range("top_k", flags.top_k, 0, None)
    _check_range("min_p", flags.min_p, 0, 1)
    _check_range("typical_p", flags.typical_p, 0, 1, low_open=True)
    _check_range("num_beams", flags.num_beams, 1, None)
    _check_range("repetition_penalty", flags.repetition_penalty, 0, None, low_open=True)
    _check_range("no_repeat_ngram_size", flags.no_repeat_ngram_size, 0, None)
    _check_range("num_return_sequences", flags.num_return_sequences, 1, None)
    if (
        flags.min_new_tokens is not None
        and flags.max_new_tokens is not None
        and flags.min_new_tokens > flags.max_new_tokens
    ):
        raise UsageError(f"--min-new-tokens ({flags.min_new_tokens}) exceeds --max-new-tokens ({flags.max_new_tokens})")

    kwargs: dict[str, Any] = {}
    for name in (
        "max_new_tokens",
        "min_new_tokens",
        "num_beams",
        "length_penalty",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "num_return_sequences",
    ):
        value = getattr(flags, name)
        if value is not None:
            kwargs[name] = value

    sampling_set = [n for n in SAMPLING_FLAGS if getattr(flags, n) is not None]
    if flags.temperature == 0:
        # Temperature 0 is the limit of sharpening: the argmax, i.e. greedy decoding.
        if flags.do_sample is True:
            raise UsageError("--do-sample contradicts --temperature 0 (which means greedy decoding)")
        others = [n for n in sampling_set if n != "temperature"]
        if others:
            raise UsageError(f"--temperature 0 means greedy decoding; it contradicts --{others[0].replace('_', '-')}")
        kwargs["do_sample"] = False
    else:
        if flags.do_sample is False and sampling_set:
            name = sampling_set[0]
            raise UsageError(
                f"--greedy contradicts --{name.replace('_', '-')} {getattr(flags, name)} (a sampling setting)"
            )
        for name in sampling_set:
            kwargs[name] = getattr(flags, name)
        if flags.do_sample is not None:
            kwargs["do_sample"] = flags.do_sample
        elif sampling_set:
            kwargs["do_sample"] = True

    if flags.early_stopping is not None:
        value = flags.early_stopping.lower()
        if value not in ("true", "false", "never"):
            raise UsageError(f"--early-stopping must be true, false or never, got {flags.early_stopping!r}")
        kwargs["early_stopping"] = {"true": True, "false": False}.get(value, "never")

    beams = flags.num_beams or 1
    returns = flags.num_return_sequences or 1
    if beams > 1 and returns > beams:
        raise UsageError(f"--num-return-sequences ({returns}) cannot exceed --num-beams ({beams})")
    if flags.stop:
        if any(s == "" for s in flags.stop):
            raise UsageError("--stop needs a non-empty string")
        kwargs["stop_strings"] = list(dict.fromkeys(flags.stop))
    if flags.compile:
        # generate() compiles its decoding step when the cache is static and a compile_config is given.
        kwargs["cache_implementation"] = "static"
        kwargs["compile_config"] = {}

    for item in flags.extra:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got {item!r}")
        if key in HUB_ONLY_KEYS:
            raise UsageError(
                f"--set {key}: this decoding mode needs code from the Hub in transformers 5; "
                "llmcli runs offline and does not support it"
            )
        if key in OWNED_KEYS:
            raise UsageError(f"--set {key}: use the dedicated flag instead")
        value = parse_set_value(raw)
        if key == "compile_config":
            if not isinstance(value, dict):
                raise UsageError(f"--set compile_config takes a JSON object of CompileConfig fields, got {raw!r}")
            kwargs[key] = {**kwargs.get(key, {}), **value}
            continue
        if key in kwargs:
            raise UsageError(f"--set {key} repeats a value already given by a flag")
        kwargs[key] = value
    return kwargs


def for_generate(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The kwargs as generate() takes them: a `compile_config` dict becomes transformers' CompileConfig.

    Asking for compilation is explicit here, so it applies on every device (transformers otherwise
    compiles only on accelerators).
    """
    if not isinstance(kwargs.get("compile_config"), dict):
        return kwargs
    from transformers.generation.configuration_utils import CompileConfig

    try:
        config = CompileConfig(**kwargs["compile_config"])
    except TypeError as exc:
        raise UsageError(f"--set compile_config: {exc}") from None
    config._compile_all_devices = True
    return {**kwargs, "compile_config": config}


def needs_sampling(kwargs: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether generate() will sample, given the model's defaults and our overrides."""
    if "do_sample" in kwargs:
        return bool(kwargs["do_sample"])
    return bool(defaults.get("do_sample", False))


def effective_config(defaults: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Model defaults overlaid with our overrides, validated by GenerationConfig itself (strictly).

    Imports transformers (not torch weights); raises UsageError with GenerationConfig's own words.
    """
    import logging
    import warnings

    from transformers import GenerationConfig

    merged = {k: v for k, v in defaults.items() if k != "transformers_version"}
    merged.update(for_generate(kwargs))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("transformers").setLevel(logging.ERROR)
            known = set(GenerationConfig().to_dict())
            unknown = [k for k in kwargs if k not in known]
            if unknown:
                raise UsageError(f"--set {unknown[0]}: not a GenerationConfig field")
            # Strict about what the user set (with the model's do_sample, which decides the mode); lenient
            # about inconsistencies that the model's own generation_config.json ships with.
            own = for_generate(kwargs)
            if "do_sample" not in own and "do_sample" in defaults:
                own["do_sample"] = defaults["do_sample"]
            GenerationConfig(**own).validate(strict=True)
            config = GenerationConfig(**merged)
            config.validate(strict=False)
    except UsageError:
        raise
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid generation settings: {' '.join(str(exc).split())[:300]}") from None
    diff = {k: v for k, v in config.to_diff_dict().items() if k != "transformers_version"}
    if diff.get("compile_config") is not None:
        diff["compile_config"] = diff["compile_config"].to_dict()
    return diff
