"""The one generation pipeline: encode → prepare → stream (generate() in a worker) → collect.

The shape of mlx-lm's generate_step → stream_generate → generate. `stream_generate()` yields events, text
as it decodes (`TextDelta`) and then the results (`Finished`), so that a terminal, a JSONL writer and an
HTTP stream can each consume it; `generate()` collects them. transformers' generate() decodes; this module
prepares its inputs, watches it (timer, text stream, Ctrl-C) and turns its sequences into `Result`s.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from llmcli.engine.collect import eos_set, results_of, stats_of
from llmcli.engine.records import Output, Result, Stats
from llmcli.engine.streaming import ScoreTap, TextStream, TokenTimer
from llmcli.errors import Interrupted, LlmcliError, UsageError, squash
from llmcli.plan import GenerationPlan
from llmcli.prompts import chat_messages

__all__ = ["Finished", "GenerationInterrupted", "Output", "Result", "Stats", "TextDelta", "generate"]

# Used only when neither the user nor the model's generation_config.json bounds the length.
FALLBACK_MAX_NEW_TOKENS = 256


@dataclass
class TextDelta:
    """New text of the single streamed output; `prob` is its token's probability when asked for."""

    text: str
    prob: float | None = None


@dataclass
class Finished:
    results: list[Result]


Event = TextDelta | Finished


class GenerationInterrupted(Interrupted):
    def __init__(self, results: list[Result]):
        super().__init__("interrupted")
        self.results = results


def encode(tokenizer: Any, text: str, *, system: str | None = None, raw: bool = False) -> list[int]:
    """The prompt's token ids: through the chat template unless `raw` (or the model has none)."""
    if not raw and getattr(tokenizer, "chat_template", None):
        messages = chat_messages(system, [{"role": "user", "content": text}])
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    if system and not raw:
        raise UsageError("--system needs a chat template, and this model has none (drop --system or use --raw)")
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def model_context(config: dict[str, Any]) -> int | None:
    from llmcli.modelfs.config import geometry

    return geometry(config).context


@dataclass
class Call:
    """One generate() call, ready to run: inputs padded on the left, keyword arguments completed."""

    loaded: Any
    prompts: list[str]
    encoded: list[list[int]]
    kwargs: dict[str, Any]
    seed: int | None
    logprobs: int | None
    pad_id: int
    width: int
    eos: set[int] = field(default_factory=set)
    constraint: Any = None  # engine.constraints.Compiled
    assistant: Any = None  # generate()'s assistant_model

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def stops(self) -> list[str]:
        return list(self.kwargs.get("stop_strings") or [])

    @property
    def on_gpu(self) -> bool:
        return self.loaded.device.startswith("cuda")

    @property
    def beams(self) -> int:
        return self.kwargs.get("num_beams", self.loaded.model.generation_config.num_beams or 1)

    @property
    def single(self) -> bool:
        return len(self.prompts) == 1 and self.kwargs.get("num_return_sequences", 1) == 1 and self.beams == 1


def prepare(loaded: Any, prompts: list[str], encoded: list[list[int]], plan: GenerationPlan) -> Call:
    """Checks the prompts against the context and completes generate()'s arguments (length, padding)."""
    context = model_context(loaded.config)
    for ids in encoded:
        if not ids:
            raise UsageError("the prompt encodes to no tokens")
        if context and len(ids) >= context:
            raise LlmcliError(
                f"the prompt is {len(ids):,} tokens, but the model's context is {context:,} tokens",
                hint="shorten the prompt",
            )
    kwargs = dict(plan.kwargs)
    defaults = loaded.model.generation_config
    unbounded = getattr(defaults, "max_new_tokens", None) is None and getattr(defaults, "max_length", 20) in (None, 20)
    if "max_new_tokens" not in kwargs and unbounded:
        kwargs["max_new_tokens"] = FALLBACK_MAX_NEW_TOKENS
    if context and kwargs.get("max_new_tokens"):
        kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], context - max(len(i) for i in encoded))
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    if "pad_token_id" not in kwargs and getattr(defaults, "pad_token_id", None) is None:
        kwargs["pad_token_id"] = pad_id
    call = Call(loaded, prompts, encoded, kwargs, plan.seed, plan.logprobs, pad_id, max(len(i) for i in encoded))
    if plan.logprobs is not None:
        if call.beams > 1:
            raise UsageError("--logprobs works with greedy decoding and sampling, not with beam search")
        kwargs["output_logits"] = True
        kwargs["return_dict_in_generate"] = True
    call.eos = eos_set(loaded.model, kwargs)
    call.constraint = plan.constraint
    call.assistant = plan.assistant
    return call


_ENGINE: list[ThreadPoolExecutor] = []


def engine_thread() -> ThreadPoolExecutor:
    """The one thread on which every generate() call runs, one call at a time.

    torch's OpenMP workers belong to the thread that starts a parallel region. Two threads taking turns on
    the CPU each keep a team whose idle workers spin for a while, in each other's way: on 2 cores a fresh
    thread per call decoded a batch of 4 up to 12% slower than the thread before it (benchmarks in
    docs/performance.md). One long-lived thread keeps one team.
    """
    if not _ENGINE:
        _ENGINE.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmcli-engine"))
    return _ENGINE[0]


class GenerationStream:
    """Iterate for the events of one call; `stop()` ends it early (Ctrl-C, a client gone) with what it has.
    Use it as a context manager so that the worker never outlives its consumer.

    generate() runs on the engine thread so that the caller can consume tokens as they come and stop the
    call between two decoding steps (a stopping criterion watches the flag).
    """

    def __init__(self, call: Call, *, stream_text: bool, token_probs: bool):
        self.call = call
        self.events: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.stream_text = stream_text and call.single
        self.token_probs = token_probs and self.stream_text
        self.results: list[Result] | None = None
        self.job = engine_thread().submit(self._work)

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # Whatever ended the consumer (an error, stdout closed), the worker must not outlive it.
        if not self.job.done():
            self._halt()

    def _halt(self) -> None:
        self.cancelled.set()
        wait([self.job])

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.events.get()
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, Finished):
                self.results = event.results
            yield event
            if isinstance(event, Finished):
                return

    def stop(self) -> list[Result]:
        """Stop after the current decoding step; the partial results, marked interrupted."""
        self._halt()
        while self.results is None:
            event = self.events.get()
            if isinstance(event, Finished):
                self.results = event.results
            elif isinstance(event, BaseException):
                return []
        return self.results

    def _work(self) -> None:
        if self.cancelled.is_set():  # stopped while it waited for the engine thread (a client gone): skip it
            self.events.put(Finished([]))
            return
        try:
            self.events.put(Finished(_run(self.call, self)))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self.events.put(exc)

    def emit(self, text: str, prob: float | None) -> None:
        self.events.put(TextDelta(text, prob))


def stream_generate(
    loaded: Any,
    prompts: list[str],
    plan: GenerationPlan,
    *,
    encoded: list[list[int]] | None = None,
    system: str | None = None,
    raw: bool = False,
    stream_text: bool = False,
    token_probs: bool = False,
) -> GenerationStream:
    """Prompts sharing one batch (left-padded). Text streams only when there is a single output.

    `encoded`: token ids prepared by the caller (chat's whole conversation) instead of encoding `prompts`.
    `token_probs`: each TextDelta carries the probability of the token that produced it.
    """
    if encoded is None:
        encoded = [encode(loaded.tokenizer, p, system=system, raw=raw) for p in prompts]
    call = prepare(loaded, prompts, encoded, plan)
    return GenerationStream(call, stream_text=stream_text, token_probs=token_probs)


def generate(loaded: Any, prompts: list[str], plan: GenerationPlan, **options: Any) -> list[Result]:
    """`stream_generate()` consumed: the results (GenerationInterrupted with the partial ones on Ctrl-C)."""
    with stream_generate(loaded, prompts, plan, **options) as stream:
        try:
            for event in stream:
                if isinstance(event, Finished):
                    return event.results
        except KeyboardInterrupt:
            raise GenerationInterrupted(stream.stop()) from None
    raise AssertionError("the generation stream ended without results")


def _run(call: Call, stream: GenerationStream) -> list[Result]:
    """In the worker: one generate() call, watched by the timer, the text stream and the stop flag."""
    import torch

    from llmcli.engine.attention import attention_for_call
    from llmcli.genargs import for_generate

    loaded = call.loaded
    width = call.width
    input_ids = torch.tensor([[call.pad_id] * (width - len(i)) + i for i in call.encoded], device=loaded.model.device)
    attention = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in call.encoded], device=input_ids.device)
    text_stream, timer, extra = _watchers(call, stream)
    if call.seed is not None:
        random.seed(call.seed)
        torch.manual_seed(call.seed)
    if call.on_gpu:
        torch.cuda.reset_peak_memory_stats(loaded.device)
    started = time.perf_counter()
    static = call.kwargs.get("cache_implementation") == "static"
    try:
        with torch.inference_mode(), attention_for_call(loaded, input_ids.numel(), static) as attn_used:
            out = loaded.model.generate(
                input_ids=input_ids, attention_mask=attention, **for_generate(call.kwargs), **extra
            )
    except torch.cuda.OutOfMemoryError:
        if text_stream is not None:  # hand out what was generated before the error
            text_stream.finish(text_stream.text())
        raise LlmcliError(
            f"CUDA out of memory during generation on {loaded.device}",
            hint="lower --max-new-tokens or --batch-size, or use --dtype bfloat16",
        ) from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"generate() rejected the settings: {squash(exc)}") from None
    step_logits = out.logits if call.logprobs is not None else None
    sequences = (out.sequences if call.logprobs is not None else out).tolist()
    ended = time.perf_counter()
    interrupted = stream.cancelled.is_set()
    results = results_of(call, sequences, step_logits, interrupted=interrupted)
    stats = stats_of(call, results, timer, started, ended)
    stats.attn_implementation = attn_used
    for result in results:
        result.stats = stats
    if text_stream is not None and not interrupted:
        text_stream.finish(results[0].outputs[0].text)
    return results


def _watchers(call: Call, stream: GenerationStream) -> tuple[TextStream | None, TokenTimer | None, dict[str, Any]]:
    """generate()'s extra arguments: the streamer (timing, streamed text), the score tap, the stop flag."""
    import torch
    from transformers.generation.logits_process import LogitsProcessorList
    from transformers.generation.stopping_criteria import StoppingCriteriaList

    tap = ScoreTap() if stream.token_probs else None
    # The tap sees the model's distribution before the grammar masks it.
    processors = ([tap] if tap else []) + ([call.constraint.processor()] if call.constraint is not None else [])
    current = {"prob": None}
    text_stream = (
        TextStream(call.tokenizer, lambda text: stream.emit(text, current["prob"]), call.stops)
        if stream.stream_text
        else None
    )

    def on_tokens(ids: list[int]) -> None:
        if tap is not None and tap.last is not None:
            current["prob"] = float(torch.softmax(tap.last[0].float(), dim=-1)[ids[0]])
        text_stream.add(ids)

    sync = (lambda: torch.cuda.synchronize(call.loaded.device)) if call.on_gpu else None
    timer = TokenTimer(on_tokens if text_stream else None, sync) if call.beams == 1 else None
    extra: dict[str, Any] = {"stopping_criteria": StoppingCriteriaList([stop_flag(stream.cancelled)])}
    if call.stops:
        extra["tokenizer"] = call.tokenizer
    if timer is not None:
        extra["streamer"] = timer
    if processors:
        extra["logits_processor"] = LogitsProcessorList(processors)
    if call.assistant is not None:
        extra["assistant_model"] = call.assistant
    return text_stream, timer, extra


def stop_flag(flag: threading.Event) -> Any:
    """A stopping criterion: every sequence is done once `flag` is set (Ctrl-C, a client gone)."""
    import torch
    from transformers.generation.stopping_criteria import StoppingCriteria

    class StopFlag(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), flag.is_set(), dtype=torch.bool, device=input_ids.device)

    return StopFlag()


def pick_seed(seed: int | None, *, sampling: bool) -> int | None:
    """Sampling always runs under a seed, reported in --json, so any output can be reproduced."""
    if seed is not None:
        return seed
    if sampling:
        return random.SystemRandom().randrange(0, 2**31 - 1)
    return None
