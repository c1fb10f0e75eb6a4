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
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from llmcli.engine.generate.calls import Call, encode, prepare
from llmcli.engine.generate.collect import results_of, stats_of, step_logprobs
from llmcli.engine.generate.records import Output, Result, Stats
from llmcli.engine.generate.streaming import ScoreTap, TextStream, TokenTimer
from llmcli.engine.load.worker import engine_thread
from llmcli.errors import Interrupted, LlmcliError, UsageError, squash
from llmcli.plan import GenerationPlan

__all__ = ["Finished", "GenerationInterrupted", "Output", "Result", "Stats", "TextDelta", "TokenLogprobs", "generate"]


@dataclass
class TextDelta:
    """New text of the single streamed output; `prob` is its token's probability when asked for."""

    text: str
    prob: float | None = None


@dataclass
class TokenLogprobs:
    """The log-probability of each token just chosen and of its top rivals (`stream_generate(token_logprobs=N)`),
    put before the text the token produces."""

    entries: list[dict[str, Any]]


@dataclass
class Finished:
    results: list[Result]


Event = TextDelta | TokenLogprobs | Finished


class GenerationInterrupted(Interrupted):
    def __init__(self, results: list[Result]):
        super().__init__("interrupted")
        self.results = results


class GenerationStream:
    """Iterate for the events of one call; `stop()` ends it early (Ctrl-C, a client gone) with what it has.
    Use it as a context manager so that the worker never outlives its consumer.

    generate() runs on the engine thread so that the caller can consume tokens as they come and stop the
    call between two decoding steps (a stopping criterion watches the flag). Under `llmcli serve` a call
    the step scheduler accepts runs as one row of its batch instead (engine.batch.scheduler).
    """

    def __init__(
        self,
        call: Call,
        *,
        stream_text: bool,
        token_probs: bool,
        token_logprobs: int | None = None,
        scheduler: Any = None,
    ):
        self.call = call
        self.events: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.stream_text = stream_text and call.single
        self.token_probs = token_probs and self.stream_text
        self.token_logprobs = token_logprobs if self.stream_text else None
        self.results: list[Result] | None = None
        self.text_stream: TextStream | None = None  # as a row of the step scheduler
        self.prob: float | None = None  # the probability of the token behind the latest text
        # Token probabilities come from generate()'s score tap: such a call runs apart.
        tapped = self.token_probs or self.token_logprobs is not None
        rows = scheduler is not None and not tapped and scheduler.accepts(call)
        self.scheduler = scheduler if rows else None
        if self.scheduler is not None:
            self.job: Future[None] = Future()
            self.scheduler.submit(self)
        else:
            self.job = engine_thread().submit(self._work)

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # Whatever ended the consumer (an error, stdout closed), the worker must not outlive it.
        if not self.job.done():
            self._halt()

    def _halt(self) -> bool:
        """Stops the call; False when no results will come (it never ran)."""
        self.cancelled.set()
        if self.scheduler is not None and self.scheduler.withdraw(self):
            self.job.set_result(None)
            return False
        wait([self.job])
        return True

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.events.get()
            if isinstance(event, BaseException):
                self.results = []  # the call failed: stop() has nothing more to wait for
                raise event
            if isinstance(event, Finished):
                self.results = event.results
            yield event
            if isinstance(event, Finished):
                return

    def stop(self) -> list[Result]:
        """Stop after the current decoding step; the partial results, marked interrupted."""
        if self.results is not None:
            return self.results
        if not self._halt():
            return []
        while self.results is None:
            event = self.events.get()
            if isinstance(event, Finished):
                self.results = event.results
            elif isinstance(event, BaseException):
                return []
        return self.results

    def _work(self) -> None:
        if self.cancelled.is_set():  # stopped while it waited for the engine thread (a client gone)
            self.events.put(Finished([]))
            return
        try:
            results = _run(self.call, self)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self.events.put(exc)
            return
        self.events.put(Finished(results))

    def emit(self, text: str, prob: float | None) -> None:
        self.events.put(TextDelta(text, prob))

    def new_text_stream(self) -> TextStream:
        """Decodes this call's tokens into TextDeltas (with the latest token's probability when asked for)."""
        return TextStream(self.call.tokenizer, lambda text: self.emit(text, self.prob), self.call.stops)

    # ------------------------------------------------------------------ as a row of the step scheduler

    def attach(self, row: Any) -> None:
        if self.stream_text:
            self.text_stream = self.new_text_stream()
        self.fed = 0

    def deliver(self, row: Any) -> None:
        """The row's new tokens to its text stream."""
        if self.text_stream is not None and len(row.generated) > self.fed:
            self.text_stream.add(row.generated[self.fed :])
        self.fed = len(row.generated)

    def complete(self, result: Result | None) -> None:
        """The row's Result (batch.rows.row_result), or None where the request ended before it had a row."""
        results = [] if result is None else [result]
        if results and self.text_stream is not None and not self.cancelled.is_set():
            self.text_stream.finish(results[0].outputs[0].text)
        self.events.put(Finished(results))
        self.job.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.job.done():  # once: the first error is the one its consumer sees
            self.events.put(exc)
            self.job.set_result(None)


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
    token_logprobs: int | None = None,
    scheduler: Any = None,
) -> GenerationStream:
    """Prompts sharing one batch (left-padded). Text streams only when there is a single output.

    `encoded`: token ids prepared by the caller (chat's whole conversation) instead of encoding `prompts`.
    `token_probs`: each TextDelta carries the probability of the token that produced it.
    `token_logprobs`: TokenLogprobs events give each token's log-probability and its top N rivals as it is chosen,
    from the logits the sampler receives (before temperature and the filters, as --logprobs reports them).
    `scheduler`: an engine.batch.scheduler.Scheduler that runs the call as a row of its batch (llmcli serve).
    """
    if encoded is None:
        encoded = [encode(loaded.tokenizer, p, system=system, raw=raw) for p in prompts]
    call = prepare(loaded, prompts, encoded, plan)
    return GenerationStream(
        call, stream_text=stream_text, token_probs=token_probs, token_logprobs=token_logprobs, scheduler=scheduler
    )


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

    from llmcli.engine.generate.attention import attention_for_call
    from llmcli.engine.generate.compile_time import compile_seconds, say_compiled
    from llmcli.engine.generate.penalties import split_penalties
    from llmcli.engine.load.devices import input_device
    from llmcli.engine.step import ahead_of_time, installed_for
    from llmcli.genargs import for_generate

    loaded = call.loaded
    width = call.width
    rows = [[call.pad_id] * (width - len(i)) + i for i in call.encoded]
    input_ids = torch.tensor(rows, device=input_device(loaded.model))
    attention = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in call.encoded], device=input_ids.device)
    kwargs, penalties = split_penalties(for_generate(call.kwargs))
    kwargs, step = ahead_of_time(loaded, call, kwargs)
    text_stream, timer, extra = _watchers(call, stream, penalties)
    if call.seed is not None:
        random.seed(call.seed)
        torch.manual_seed(call.seed)
    if call.on_gpu:
        torch.cuda.reset_peak_memory_stats(loaded.device)
    started = time.perf_counter()
    static = kwargs.get("cache_implementation") == "static"  # the user's, or a kept compiled step's
    compiling = call.kwargs.get("compile_config") is not None
    compiled_before = compile_seconds() if compiling else 0.0
    try:
        with (
            torch.inference_mode(),
            attention_for_call(loaded, input_ids.numel(), static) as attn_used,
            installed_for(loaded, step, kwargs),
        ):
            out = loaded.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs, **extra)
    except torch.cuda.OutOfMemoryError:
        if text_stream is not None:  # hand out what was generated before the error
            text_stream.finish(text_stream.text())
        raise LlmcliError(
            f"CUDA out of memory during generation on {loaded.device}",
            hint="lower --max-new-tokens or --batch-size, or use --dtype bfloat16",
        ) from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"generate() rejected the settings: {squash(exc)}") from None
    if compiling:
        say_compiled(compiled_before)
    step_logits = out.logits if call.logprobs is not None else None
    sequences = (out.sequences if call.logprobs is not None else out).tolist()
    ended = time.perf_counter()
    results = results_of(call, sequences, step_logits, interrupted=stream.cancelled.is_set())
    stats = stats_of(call, results, timer, started, ended)
    stats.attn_implementation = attn_used
    stats.compiled_step = step.used() if step is not None else None
    for result in results:
        result.stats = stats
    if text_stream is not None and not stream.cancelled.is_set():
        text_stream.finish(results[0].outputs[0].text)
    return results


def _watchers(
    call: Call, stream: GenerationStream, penalties: list[Any]
) -> tuple[TextStream | None, TokenTimer | None, dict[str, Any]]:
    """generate()'s extra arguments: the streamer (timing, streamed text), the score tap, the stop flag, and
    the logits processors of llmcli's own settings (penalties, a grammar)."""
    import torch
    from transformers.generation.logits_process import LogitsProcessorList
    from transformers.generation.stopping_criteria import StoppingCriteriaList

    tap = ScoreTap() if stream.token_probs or stream.token_logprobs is not None else None
    # The tap sees the model's distribution before the penalties move it and the grammar masks it.
    grammar = [call.constraint.processor()] if call.constraint is not None else []
    processors = ([tap] if tap else []) + penalties + grammar
    text_stream = stream.new_text_stream() if stream.stream_text else None

    def on_tokens(ids: list[int]) -> None:
        # Every id is the stream's own (assisted decoding hands over several at once).
        if tap is not None and tap.last is not None:
            stream.prob = float(torch.softmax(tap.last[0].float(), dim=-1)[ids[0]])
            if stream.token_logprobs is not None:
                entry = step_logprobs(tap.last[0], ids[0], stream.token_logprobs, call.tokenizer)
                stream.events.put(TokenLogprobs([entry]))
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
    """A stopping criterion: every row is done once the flag is set (Ctrl-C, a client gone)."""
    import torch
    from transformers.generation.stopping_criteria import StoppingCriteria

    class StopFlag(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), flag.is_set(), dtype=torch.bool, device=input_ids.device)

    return StopFlag()
