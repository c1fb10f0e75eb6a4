"""Flags → `generate()` keyword arguments: a pure function, testable without a model or torch.

Each flag is forwarded under its own `generate()` name and only when the user set it, so the model's
generation_config.json defaults survive for everything else.
"""

from __future__ import annotations

import json
from typing import Any

from llmcli.errors import UsageError, squash
from llmcli.flags import BY_KEY, EARLY_STOPPING_VALUES, FLAGS, SAMPLING_KEYS

# Modes transformers 5 serves only by downloading code from the Hub: never reachable from llmcli.
HUB_ONLY_KEYS = {"num_beam_groups", "diversity_penalty", "custom_generate", "constraints", "force_words_ids"}
# Keys that --set may not use because a typed flag or llmcli itself owns them.
OWNED_KEYS = {"stop_strings", "streamer", "output_scores", "output_logits", "return_dict_in_generate", "sequence_bias"}
# Settings generate() has no field for: the engine applies them as a logits processor of its own
# (engine/generate/penalties.py), before the sampling filters, as vLLM does.
PROCESSOR_KEYS = ("frequency_penalty", "presence_penalty")
BIAS_LIMIT = 100.0  # OpenAI's range for logit_bias values


class DecodingFlags:
    """The values of the decoding flags in `FLAGS` (None: not set), `--set` items and `--compile`."""

    def __init__(self, *, extra: list[str] | None = None, compile: bool = False, **values: Any):
        unknown = [k for k in values if k not in BY_KEY]
        if unknown:
            raise TypeError(f"not a decoding flag: {unknown[0]}")
        self.values = {k: v for k, v in values.items() if v is not None and v != []}
        self.extra = list(extra or [])
        self.compile = compile

    def get(self, key: str) -> Any:
        return self.values.get(key)


def parse_set_value(text: str) -> Any:
    """`--set` values are JSON when they parse as JSON (numbers, true, lists), else plain strings."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text


def sampling_settings(flags: DecodingFlags) -> dict[str, Any]:
    """next-token's filters: the sampling flags, checked; temperature 0 kept (it means argmax there)."""
    settings = build_generate_kwargs(flags)
    if flags.get("temperature") == 0:
        settings["temperature"] = 0
    return {k: v for k, v in settings.items() if k in SAMPLING_KEYS}


def build_generate_kwargs(flags: DecodingFlags) -> dict[str, Any]:
    """The keyword arguments for `model.generate()`; raises UsageError on contradictions."""
    for key, value in flags.values.items():
        BY_KEY[key].check(value)
    low, high = flags.get("min_new_tokens"), flags.get("max_new_tokens")
    if low is not None and high is not None and low > high:
        raise UsageError(f"--min-new-tokens ({low}) exceeds --max-new-tokens ({high})")
    kwargs: dict[str, Any] = {}
    for flag in FLAGS:
        special = ("do_sample", "early_stopping", "stop", "logit_bias")
        if flag.key in flags.values and not flag.sampling and flag.key not in special:
            kwargs[flag.forwarded_as] = flags.values[flag.key]
    kwargs.update(_sampling_kwargs(flags))
    if flags.get("early_stopping") is not None:
        value = str(flags.get("early_stopping")).lower()
        if value not in EARLY_STOPPING_VALUES:
            raise UsageError(f"--early-stopping must be true, false or never, got {flags.get('early_stopping')!r}")
        kwargs["early_stopping"] = EARLY_STOPPING_VALUES[value]
    beams, returns = flags.get("num_beams") or 1, flags.get("num_return_sequences") or 1
    if beams > 1 and returns > beams:
        raise UsageError(f"--num-return-sequences ({returns}) cannot exceed --num-beams ({beams})")
    stops = flags.get("stop")
    if stops:
        if any(s == "" for s in stops):
            raise UsageError("--stop needs a non-empty string")
        kwargs["stop_strings"] = list(dict.fromkeys(stops))
    if flags.get("logit_bias"):
        kwargs["sequence_bias"] = [[[token], bias] for token, bias in parse_logit_bias(flags.get("logit_bias")).items()]
    if flags.compile:
        # generate() compiles its decoding step when the cache is static and a compile_config is given.
        kwargs["cache_implementation"] = "static"
        kwargs["compile_config"] = {}
    for item in flags.extra:
        _apply_set(kwargs, item)
    return kwargs


def parse_logit_bias(items: list[str] | str) -> dict[int, float]:
    """--logit-bias ID=BIAS items as {token id: bias}; the last one given for an id wins."""
    out: dict[int, float] = {}
    for item in [items] if isinstance(items, str) else items:
        token, sep, bias = str(item).partition("=")
        try:
            key, value = int(token), float(bias)
        except ValueError:
            key, value = -1, 0.0
        if not sep or key < 0:
            raise UsageError(f"--logit-bias expects TOKEN_ID=BIAS (e.g. 198=-100), got {item!r}")
        if not -BIAS_LIMIT <= value <= BIAS_LIMIT:
            raise UsageError(f"--logit-bias {item}: the bias must be in [-100, 100]")
        out[key] = value
    return out


def _sampling_kwargs(flags: DecodingFlags) -> dict[str, Any]:
    """Sampling filters turn sampling on; temperature 0 (the limit of sharpening, the argmax) means greedy."""
    do_sample = flags.get("do_sample")
    sampling_set = [k for k in SAMPLING_KEYS if flags.get(k) is not None]
    if flags.get("temperature") == 0:
        if do_sample is True:
            raise UsageError("--do-sample contradicts --temperature 0 (which means greedy decoding)")
        others = [k for k in sampling_set if k != "temperature"]
        if others:
            raise UsageError(f"--temperature 0 means greedy decoding; it contradicts {BY_KEY[others[0]].option}")
        return {"do_sample": False}
    if do_sample is False and sampling_set:
        key = sampling_set[0]
        raise UsageError(f"--greedy contradicts {BY_KEY[key].option} {flags.get(key)} (a sampling setting)")
    out = {k: flags.get(k) for k in sampling_set}
    if do_sample is not None:
        out["do_sample"] = do_sample
    elif sampling_set:
        out["do_sample"] = True
    return out


def _apply_set(kwargs: dict[str, Any], item: str) -> None:
    """One `--set key=value`: any other GenerationConfig field, unless llmcli or a flag owns it."""
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
        return
    if key in kwargs:
        raise UsageError(f"--set {key} repeats a value already given by a flag")
    kwargs[key] = value


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

    own_keys = {k: kwargs[k] for k in PROCESSOR_KEYS if k in kwargs}  # shown, but no GenerationConfig field
    kwargs = {k: v for k, v in kwargs.items() if k not in PROCESSOR_KEYS}
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
        raise UsageError(f"invalid generation settings: {squash(exc)}") from None
    diff = {k: v for k, v in config.to_diff_dict().items() if k != "transformers_version"}
    if diff.get("compile_config") is not None:
        diff["compile_config"] = diff["compile_config"].to_dict()
    return {**diff, **own_keys}


def pick_seed(seed: int | None, *, sampling: bool) -> int | None:
    """Sampling always runs under a seed, reported in --json, so any output can be reproduced."""
    if seed is not None:
        return seed
    if sampling:
        import random

        return random.SystemRandom().randrange(0, 2**31 - 1)
    return None


def checked_seed(defaults: dict[str, Any], kwargs: dict[str, Any], seed: int | None) -> int | None:
    """GenerationConfig's own checks on the flags over the model's defaults (before any weight loads), then
    the seed the call runs under."""
    effective_config(defaults, kwargs)
    return pick_seed(seed, sampling=needs_sampling(kwargs, defaults))
