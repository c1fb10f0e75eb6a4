"""`llmcli bench`: llmcli's own generate path against a bare transformers generate(), same process, same inputs.

Both sides are timed the same way: the wall time of one generate() call producing exactly G tokens
(min_new_tokens = max_new_tokens = G, greedy) and of a call producing one token (the prefill). Decode
speed is (G - 1) × batch / (t_G - t_1).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FILLER = " the quick brown fox jumps over the lazy dog"


def prompt_of_length(tokenizer: Any, n: int) -> tuple[str, list[int]]:
    """A raw prompt whose tokenization is exactly n tokens (special tokens the tokenizer adds included)."""
    text = FILLER * (n // 4 + 2)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    while len(ids) > n:
        text = tokenizer.decode(ids[:n], skip_special_tokens=True)
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(ids) > n:
            text = text[:-1]
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if len(ids) != n:
        from llmcli.errors import UsageError

        raise UsageError(f"cannot build a prompt of exactly {n} tokens with this tokenizer")
    return text, list(ids)


@dataclass
class Measure:
    seconds_full: list[float] = field(default_factory=list)
    seconds_first: list[float] = field(default_factory=list)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(m: Measure, prompt: int, gen: int, batch: int) -> dict[str, Any]:
    t_full = statistics.median(m.seconds_full)
    t_first = statistics.median(m.seconds_first)
    # A full run's own prefill is no faster than the fastest one measured; the median would let one cold
    # first call (no warm-up, two reps) exceed every full run and leave no decode figure at all.
    fastest_first = min(m.seconds_first)
    decode = [(gen - 1) * batch / (f - fastest_first) for f in m.seconds_full if f > fastest_first] if gen > 1 else []
    return {
        "time_to_first_token": spread(m.seconds_first),
        "prefill_tokens_per_second": prompt * batch / t_first if t_first > 0 else None,
        "decode_tokens_per_second": spread(decode) if decode else None,
        "throughput_tokens_per_second": gen * batch / t_full if t_full > 0 else None,
        "seconds": spread(m.seconds_full),
    }


def _time(fn: Callable[[], Any], device: str) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _run_llmcli(loaded: Any, prompts: list[str], extra: dict[str, Any], n: int) -> None:
    from llmcli.engine.generate.generation import generate
    from llmcli.plan import GenerationPlan

    kwargs = {**extra, "max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    generate(loaded, prompts, GenerationPlan(kwargs=kwargs), raw=True)


def _run_raw(loaded: Any, input_ids: Any, extra: dict[str, Any], n: int) -> None:
    """A bare generate(), on the thread llmcli's own calls run on, so that both sides share one OpenMP team."""
    from llmcli.engine.load.worker import on_engine

    on_engine(_bare_generate, loaded, input_ids, extra, n)


def _bare_generate(loaded: Any, input_ids: Any, extra: dict[str, Any], n: int) -> None:
    import torch

    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.inference_mode():
        loaded.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=pad,
            **extra,
        )


@dataclass(frozen=True)
class Grid:
    """What to measure: every prompt length × generated length × batch size, `reps` times after `warmup`."""

    prompt_lengths: list[int]
    gen_lengths: list[int]
    batch_sizes: list[int]
    reps: int = 3
    warmup: int = 1


def bench(
    loaded: Any,
    grid: Grid,
    *,
    compare_raw: bool,
    progress: Callable[[str], None],
    gen_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`gen_kwargs` (e.g. --compile's static cache) go to both sides' generate() alike."""
    import torch

    from llmcli.engine.generate.collect import peak_memory
    from llmcli.genargs import for_generate

    gen_kwargs = gen_kwargs or {}

    results = []
    for p_len in grid.prompt_lengths:
        text, ids = prompt_of_length(loaded.tokenizer, p_len)
        for batch in grid.batch_sizes:
            calls: dict[str, Callable[[int], None]] = {
                "llmcli": functools.partial(_run_llmcli, loaded, [text] * batch, gen_kwargs)
            }
            if compare_raw:
                ids_t = torch.tensor([ids] * batch, device=loaded.device)
                calls["raw"] = functools.partial(_run_raw, loaded, ids_t, for_generate(gen_kwargs))
            for g_len in grid.gen_lengths:
                progress(f"prompt {p_len}, generate {g_len}, batch {batch}")
                sides = {name: Measure() for name in calls}
                # The one-token call warms too: under --compile its shorter static cache is another shape.
                for _ in range(grid.warmup):
                    for call in calls.values():
                        call(1)
                        call(g_len)
                if loaded.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats(loaded.device)
                # Alternate the two sides so that drift (heat, other load) hits both alike.
                for _ in range(grid.reps):
                    for name, call in calls.items():
                        sides[name].seconds_first.append(_time(functools.partial(call, 1), loaded.device))
                        sides[name].seconds_full.append(_time(functools.partial(call, g_len), loaded.device))
                row: dict[str, Any] = {"prompt_tokens": p_len, "generated_tokens": g_len, "batch": batch}
                for name, m in sides.items():
                    row[name] = summarize(m, p_len, g_len, batch)
                row["peak_memory_bytes"], row["peak_memory_kind"] = peak_memory(loaded.device)
                if compare_raw:
                    row["ratio"] = ratios(row["llmcli"], row["raw"])
                results.append(row)
    return {"results": results}


def ratios(ours: dict[str, Any], raw: dict[str, Any]) -> dict[str, float | None]:
    def median(entry: Any) -> float | None:
        return entry["median"] if isinstance(entry, dict) else entry

    out = {}
    for key in ("decode_tokens_per_second", "throughput_tokens_per_second", "prefill_tokens_per_second"):
        a, b = median(ours.get(key)), median(raw.get(key))
        out[key] = (a / b) if a and b else None
    return out


def load_raw(path: str, dtype: str, device: str, quantize: str = "none", attn: str = "auto") -> float:
    """Seconds for a bare AutoTokenizer + AutoModelForCausalLM load, the reference for llmcli's load time."""
    from llmcli.quiet import quiet_transformers

    quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    AutoTokenizer.from_pretrained(path)
    from llmcli.engine.load.loader import attn_kwargs

    chosen = attn_kwargs(attn)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), device_map=device, **chosen)
    if quantize == "int8-dynamic":
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif quantize in ("int4", "int8"):  # the whole float model first, then its layers: what llmcli avoids
        from llmcli.engine.quant.apply import quantize_loaded
        from llmcli.engine.quant.choice import DEFAULT_GROUP_SIZE

        quantize_loaded(model, scheme=quantize, group_size=DEFAULT_GROUP_SIZE, device=device)
    return time.perf_counter() - started
