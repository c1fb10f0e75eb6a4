"""Running generate(): prompt encoding, streaming, timing, finish reasons. One record per output."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from llmcli.errors import Interrupted, LlmcliError, UsageError

# Used only when neither the user nor the model's generation_config.json bounds the length.
FALLBACK_MAX_NEW_TOKENS = 256


@dataclass
class Output:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "stop_string"
    logprobs: list[dict[str, Any]] | None = None  # with --logprobs: one entry per generated token

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.logprobs is None:
            del data["logprobs"]
        return data


@dataclass
class Stats:
    load_seconds: float | None = None
    prompt_tokens: int = 0
    time_to_first_token: float | None = None
    prefill_tokens_per_second: float | None = None
    decode_tokens_per_second: float | None = None
    generated_tokens: int = 0
    total_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = "rss"
    attn_implementation: str | None = None


@dataclass
class Result:
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[Output]
    stats: Stats
    generate_kwargs: dict[str, Any]
    seed: int | None
    interrupted: bool = False

    def as_json(self, model: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": model,
            "prompt": self.prompt,
            "prompt_token_ids": self.prompt_token_ids,
            "generate_kwargs": self.generate_kwargs,
            "seed": self.seed,
            "outputs": [o.as_json() for o in self.outputs],
            "stats": asdict(self.stats),
        }


class ScoreTap:
    """A logits processor that changes nothing and remembers the scores of the latest step."""

    def __init__(self) -> None:
        self.last: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.last = scores
        return scores


class TokenTimer:
    """A streamer: records when the prefill ends and forwards new token ids to `on_tokens`."""

    def __init__(self, on_tokens: Callable[[list[int]], None] | None = None, sync: Callable[[], None] | None = None):
        self.on_tokens = on_tokens
        self.sync = sync  # on a GPU, put() runs ahead of the kernels: wait once so that TTFT is real
        self.prompt_seen = False
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.count = 0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt itself
            self.prompt_seen = True
            return
        if self.first_token_at is None and self.sync is not None:
            self.sync()
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now
        self.count += 1
        if self.on_tokens is not None:  # only streaming needs the ids on the host
            self.on_tokens(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class TextStream:
    """Decodes the growing token list and hands out only the new, complete text."""

    def __init__(self, tokenizer: Any, write: Callable[[str], None], stop_strings: list[str]):
        self.tokenizer = tokenizer
        self.write = write
        self.ids: list[int] = []
        self.printed = 0
        self.stop_strings = stop_strings
        self.hold = max((len(s) for s in stop_strings), default=0)
        self.stopped = False

    def add(self, ids: list[int]) -> None:
        if self.stopped:
            return
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an unfinished multi-byte character: wait for the next token
            return
        cut = first_stop(text, self.stop_strings)
        if cut is not None:
            self.stopped = True
            self._emit(text[:cut])
            return
        # Hold back what could be the start of a stop string.
        self._emit(text[: max(self.printed, len(text) - self.hold)] if self.hold else text)

    def _emit(self, upto: str) -> None:
        if len(upto) > self.printed:
            self.write(upto[self.printed :])
            self.printed = len(upto)

    def finish(self, final_text: str) -> None:
        self._emit(final_text)


def first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def prepare_prompt(tokenizer: Any, text: str, system: str | None, raw: bool) -> list[int]:
    if not raw and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    if system and not raw:
        raise UsageError("--system needs a chat template, and this model has none (drop --system or use --raw)")
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def model_context(config: dict[str, Any]) -> int | None:
    from llmcli.modelfs.config import geometry

    return geometry(config).context


def peak_memory(device: str) -> tuple[int | None, str]:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "rss"
    except (ImportError, OSError):
        return None, "rss"


def finish_reason(
    new_ids: list[int], eos_ids: set[int], text_before_cut: str, stops: list[str], max_new: int | None
) -> str:
    if new_ids and new_ids[-1] in eos_ids:
        return "stop"
    if stops and first_stop(text_before_cut, stops) is not None:
        return "stop_string"
    if stops and max_new is not None and len(new_ids) < max_new:
        # transformers matches stop strings across the prompt's tail too, so the text alone may not show it.
        return "stop_string"
    return "length"


def eos_set(model: Any, kwargs: dict[str, Any]) -> set[int]:
    eos = kwargs.get("eos_token_id", getattr(model.generation_config, "eos_token_id", None))
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}


def trim_after_eos(ids: list[int], eos: set[int]) -> list[int]:
    for i, tok in enumerate(ids):
        if tok in eos:
            return ids[: i + 1]
    return ids


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def generate_batch(
    loaded: Any,
    prompts: list[str],
    kwargs: dict[str, Any],
    seed: int | None,
    system: str | None,
    raw: bool,
    stream: Callable[[str], None] | None,
    logprobs: int | None = None,
    colorize: Callable[[str, float], None] | None = None,
    encoded: list[list[int]] | None = None,
) -> list[Result]:
    """Generate for prompts sharing one batch (left-padded). Streams only for a single output.

    With `logprobs`, generate() also returns the raw logits (`output_logits`), from which each token's
    log-probability and the top alternatives are computed; with `colorize`, streamed text is handed out
    with the probability of the token that produced it.
    """
    import torch

    from llmcli.attention import attention_for_call
    from llmcli.genargs import for_generate

    tokenizer, model = loaded.tokenizer, loaded.model
    if encoded is None:  # callers with their own conversation (chat) pass the token ids
        encoded = [prepare_prompt(tokenizer, p, system, raw) for p in prompts]
    context = model_context(loaded.config)
    for ids in encoded:
        if not ids:
            raise UsageError("the prompt encodes to no tokens")
        if context and len(ids) >= context:
            raise LlmcliError(
                f"the prompt is {len(ids):,} tokens, but the model's context is {context:,} tokens",
                hint="shorten the prompt",
            )
    call = dict(kwargs)
    gen_defaults = model.generation_config
    if (
        "max_new_tokens" not in call
        and getattr(gen_defaults, "max_new_tokens", None) is None
        and getattr(gen_defaults, "max_length", 20) in (None, 20)
    ):
        call["max_new_tokens"] = FALLBACK_MAX_NEW_TOKENS
    if context and call.get("max_new_tokens"):
        room = context - max(len(i) for i in encoded)
        if call["max_new_tokens"] > room:
            call["max_new_tokens"] = room
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    width = max(len(i) for i in encoded)
    input_ids = torch.tensor([[pad_id] * (width - len(i)) + i for i in encoded], device=model.device)
    attention = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in encoded], device=model.device)
    if "pad_token_id" not in call and getattr(gen_defaults, "pad_token_id", None) is None:
        call["pad_token_id"] = pad_id

    stops = list(call.get("stop_strings") or [])
    beams = call.get("num_beams", gen_defaults.num_beams or 1)
    if logprobs is not None:
        if beams > 1:
            raise UsageError("--logprobs works with greedy decoding and sampling, not with beam search")
        call["output_logits"] = True
        call["return_dict_in_generate"] = True
    single = len(prompts) == 1 and call.get("num_return_sequences", 1) == 1 and beams == 1
    tap = ScoreTap() if (colorize is not None and stream and single) else None
    current = {"prob": 1.0}
    write = stream
    if tap is not None:
        write = lambda text: colorize(text, current["prob"])  # noqa: E731
    text_stream = TextStream(tokenizer, write, stops) if (stream and single) else None

    def on_tokens(ids: list[int]) -> None:
        if tap is not None and tap.last is not None:
            current["prob"] = float(torch.softmax(tap.last[0].float(), dim=-1)[ids[0]])
        text_stream.add(ids)

    on_gpu = loaded.device.startswith("cuda")
    sync = (lambda: torch.cuda.synchronize(loaded.device)) if on_gpu else None
    timer = TokenTimer(on_tokens if text_stream else None, sync) if beams == 1 else None

    if seed is not None:
        seed_everything(seed)
    if loaded.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(loaded.device)
    extra: dict[str, Any] = {}
    if stops:
        extra["tokenizer"] = tokenizer
    if timer is not None:
        extra["streamer"] = timer
    if tap is not None:
        from transformers.generation.logits_process import LogitsProcessorList

        extra["logits_processor"] = LogitsProcessorList([tap])
    started = time.perf_counter()
    interrupted = False
    kernel = attention_for_call(loaded, input_ids.numel(), call.get("cache_implementation") == "static")
    attn_used = loaded.attn
    try:
        with torch.inference_mode(), kernel as attn_used:
            out = model.generate(input_ids=input_ids, attention_mask=attention, **for_generate(call), **extra)
        step_logits = out.logits if logprobs is not None else None
        sequences = (out.sequences if logprobs is not None else out).tolist()
    except KeyboardInterrupt:
        interrupted = True
        sequences = [list(input_ids[0].tolist()) + (text_stream.ids if text_stream else [])]
    except torch.cuda.OutOfMemoryError:
        if text_stream is not None:  # keep what was generated: flush it and end the line
            text_stream.finish(text_stream.tokenizer.decode(text_stream.ids, skip_special_tokens=True))
            if text_stream.printed:
                text_stream.write("\n")
        raise LlmcliError(
            f"CUDA out of memory during generation on {loaded.device}",
            hint="lower --max-new-tokens or --batch-size, or use --dtype bfloat16",
        ) from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"generate() rejected the settings: {' '.join(str(exc).split())[:300]}") from None
    ended = time.perf_counter()

    per_prompt = len(sequences) // len(prompts)
    eos = eos_set(model, call)
    results = []
    total_new = 0
    for p_index, prompt in enumerate(prompts):
        outputs = []
        for row, seq in enumerate(sequences[p_index * per_prompt : (p_index + 1) * per_prompt], p_index * per_prompt):
            new_ids = trim_after_eos(seq[width:], eos)
            while new_ids and new_ids[-1] == pad_id and pad_id not in eos:
                new_ids.pop()
            full_text = tokenizer.decode(new_ids, skip_special_tokens=True)
            cut = first_stop(full_text, stops)
            text = full_text if cut is None else full_text[:cut]
            reason = (
                "length" if interrupted else finish_reason(new_ids, eos, full_text, stops, call.get("max_new_tokens"))
            )
            lps = None
            if logprobs is not None and not interrupted:
                from llmcli.probe import step_logprobs

                lps = [step_logprobs(step_logits[t][row], tok, logprobs, tokenizer) for t, tok in enumerate(new_ids)]
            outputs.append(Output(text, new_ids, reason, lps))
            total_new += len(new_ids)
        results.append(Result(prompt, encoded[p_index], outputs, Stats(), _jsonable(call), seed, interrupted))

    stats = Stats(
        load_seconds=round(loaded.load_seconds, 3),
        prompt_tokens=sum(len(i) for i in encoded),
        generated_tokens=total_new,
        total_seconds=round(ended - started, 4),
        attn_implementation=attn_used,
    )
    if timer is not None and timer.first_token_at is not None:
        ttft = timer.first_token_at - started
        stats.time_to_first_token = round(ttft, 4)
        stats.prefill_tokens_per_second = round(stats.prompt_tokens / ttft, 2) if ttft > 0 else None
        steps = timer.count - 1
        # On a GPU the last put() is queued ahead of its kernels; the ids' copy to the host (above) waited.
        last = ended if on_gpu else timer.last_token_at
        if steps > 0 and last and last > timer.first_token_at:
            rows = input_ids.shape[0] * call.get("num_return_sequences", 1)
            stats.decode_tokens_per_second = round(steps * rows / (last - timer.first_token_at), 2)
    stats.peak_memory_bytes, stats.peak_memory_kind = peak_memory(loaded.device)
    if text_stream is not None and results and not interrupted:
        text_stream.finish(results[0].outputs[0].text)
    for r in results:
        r.stats = stats
    if interrupted:
        raise GenerationInterrupted(results)
    return results


class GenerationInterrupted(Interrupted):
    def __init__(self, results: list[Result]):
        super().__init__("interrupted")
        self.results = results


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, (str, int, float, bool, type(None), list, dict)):
            out[k] = v
        else:
            out[k] = repr(v)
    return out


def pick_seed(seed: int | None, sampling: bool) -> int | None:
    """Sampling always runs under a seed, reported in --json, so any output can be reproduced."""
    if seed is not None:
        return seed
    if sampling:
        return random.SystemRandom().randrange(0, 2**31 - 1)
    return None
