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
from dataclasses import dataclass
from typing import Any

from llmcli.engine.calls import Call, encode, prepare
from llmcli.engine.collect import results_of, stats_of
from llmcli.engine.records import Output, Result, Stats
from llmcli.engine.streaming import ScoreTap, TextStream, TokenTimer
from llmcli.errors import Interrupted, LlmcliError, UsageError, squash
from llmcli.plan import GenerationPlan

__all__ = ["Finished", "GenerationInterrupted", "Output", "Result", "Stats", "TextDelta", "generate"]


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

    def __init__(self, call: Call, *, stream_text: bool, token_probs: bool, batcher: Any = None):
        self.call = call
        self.events: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.stream_text = stream_text and call.single
        self.token_probs = token_probs and self.stream_text
        self.results: list[Result] | None = None
        self.created = time.monotonic()
        # engine.batching.Batcher: calls that wait together may share one generate() call (llmcli serve).
        self.batcher = batcher if batcher is not None and batcher.joins(call) else None
        self.shared = False  # set by the batcher: this call runs as one row of a batch
        self.text_stream: TextStream | None = None  # kept across a batcher's restart: text is handed out once
        self.prob: float | None = None  # the probability of the token behind the latest text
        if self.batcher is not None:
            self.batcher.add(self)
        self.job = engine_thread().submit(self._work)

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # Whatever ended the consumer (an error, stdout closed), the worker must not outlive it.
        if not self.job.done():
            self._halt()

    def _halt(self) -> bool:
        """Stops the call; False when no results will come (it never ran, or its row belongs to a batch
        that goes on for the others)."""
        self.cancelled.set()
        if self.batcher is not None and (self.batcher.withdraw(self) or self.shared):
            return False
        wait([self.job])
        return True

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
        group = self.batcher.take(self) if self.batcher is not None else [self]
        live = [s for s in group if not s.cancelled.is_set()]
        for stopped in group:  # stopped while it waited for the engine thread (a client gone): skipped
            if stopped not in live:
                stopped.events.put(Finished([]))
        if not live:
            return
        try:
            live, results = self._run_group(live)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumers, which raise it
            for stream in live:
                stream.events.put(exc)
            return
        if len(live) == 1:
            live[0].events.put(Finished(results))
        else:
            for stream, result in zip(live, results, strict=True):
                stream.events.put(Finished([result]))

    def _run_group(self, live: list[GenerationStream]) -> tuple[list[GenerationStream], list[Result]]:
        """One generate() call for the group; with a batcher that allows it, again with the requests that
        arrive while it is young, as many times as they come (engine.batching.Batcher.restart_seconds)."""
        from llmcli.engine.batching import merged, restart_criterion

        batcher = self.batcher
        restarts = batcher is not None and batcher.restart_seconds > 0
        deadline = time.monotonic() + (batcher.restart_seconds if restarts else 0.0)
        while True:
            young = restarts and len(live) < batcher.max_batch and time.monotonic() < deadline
            criterion = restart_criterion(batcher, live, deadline) if young else None
            call = live[0].call if len(live) == 1 else merged([s.call for s in live])
            results = _run(call, live, restart=criterion)
            if criterion is None or not criterion.fired:
                return live, results
            live = batcher.join([s for s in live if not s.cancelled.is_set()] or live)

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
    batcher: Any = None,
) -> GenerationStream:
    """Prompts sharing one batch (left-padded). Text streams only when there is a single output.

    `encoded`: token ids prepared by the caller (chat's whole conversation) instead of encoding `prompts`.
    `token_probs`: each TextDelta carries the probability of the token that produced it.
    `batcher`: an engine.batching.Batcher that may merge this call with others waiting (llmcli serve).
    """
    if encoded is None:
        encoded = [encode(loaded.tokenizer, p, system=system, raw=raw) for p in prompts]
    call = prepare(loaded, prompts, encoded, plan)
    return GenerationStream(call, stream_text=stream_text, token_probs=token_probs, batcher=batcher)


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


def _run(call: Call, streams: list[GenerationStream], *, restart: Any = None) -> list[Result]:
    """In the worker: one generate() call, watched by the timer, the text streams and the stop flags.

    `streams`: the one stream the call belongs to, or one per row when the batcher merged several calls.
    """
    import torch

    from llmcli.engine.attention import attention_for_call
    from llmcli.genargs import for_generate

    loaded = call.loaded
    width = call.width
    from llmcli.engine.loader import input_device

    rows = [[call.pad_id] * (width - len(i)) + i for i in call.encoded]
    input_ids = torch.tensor(rows, device=input_device(loaded.model))
    attention = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in call.encoded], device=input_ids.device)
    text_streams, timer, extra = _watchers(call, streams)
    if restart is not None:
        extra["stopping_criteria"].append(restart)
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
        for text_stream in filter(None, text_streams):  # hand out what was generated before the error
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
    interrupted = all(s.cancelled.is_set() for s in streams)
    results = results_of(call, sequences, step_logits, interrupted=interrupted)
    stats = stats_of(call, results, timer, started, ended)
    stats.attn_implementation = attn_used
    stats.requests_in_batch = len(streams)
    for result in results:
        result.stats = stats
    restarting = restart is not None and restart.fired  # the rerun streams on: nothing is final yet
    for stream, text_stream, result in zip(streams, text_streams, results, strict=False):
        if text_stream is not None and not stream.cancelled.is_set() and not restarting:
            text_stream.finish(result.outputs[0].text)
    return results


def _watchers(
    call: Call, streams: list[GenerationStream]
) -> tuple[list[TextStream | None], TokenTimer | None, dict[str, Any]]:
    """generate()'s extra arguments: the streamer (timing, streamed text), the score tap, the stop flags.
    Text streams and stop flags are per stream, and a merged call has one stream per row."""
    import torch
    from transformers.generation.logits_process import LogitsProcessorList
    from transformers.generation.stopping_criteria import StoppingCriteriaList

    tap = ScoreTap() if any(s.token_probs for s in streams) else None
    # The tap sees the model's distribution before the grammar masks it.
    processors = ([tap] if tap else []) + ([call.constraint.processor()] if call.constraint is not None else [])
    text_streams = [_text_stream(call, s) if s.stream_text else None for s in streams]

    def on_tokens(ids: list[int]) -> None:
        # One stream: every id is its own (assisted decoding hands over several). A batch: one id per row.
        pieces = [ids] if len(streams) == 1 else [[i] for i in ids]
        for row, (text_stream, piece) in enumerate(zip(text_streams, pieces, strict=False)):
            if text_stream is None:
                continue
            if tap is not None and tap.last is not None:
                streams[row].prob = float(torch.softmax(tap.last[row].float(), dim=-1)[piece[0]])
            text_stream.add(piece)

    streaming = any(text_streams)
    sync = (lambda: torch.cuda.synchronize(call.loaded.device)) if call.on_gpu else None
    timer = TokenTimer(on_tokens if streaming else None, sync) if call.beams == 1 else None
    extra: dict[str, Any] = {"stopping_criteria": StoppingCriteriaList([stop_flag(*(s.cancelled for s in streams))])}
    if call.stops:
        extra["tokenizer"] = call.tokenizer
    if timer is not None:
        extra["streamer"] = timer
    if processors:
        extra["logits_processor"] = LogitsProcessorList(processors)
    if call.assistant is not None:
        extra["assistant_model"] = call.assistant
    return text_streams, timer, extra


def _text_stream(call: Call, stream: GenerationStream) -> TextStream:
    """The stream's text stream. After a restart it starts over on the same tokens, and what it already
    handed out is not handed out again."""
    if stream.text_stream is None:
        stream.text_stream = TextStream(call.tokenizer, lambda text: stream.emit(text, stream.prob), call.stops)
    else:
        stream.text_stream.ids, stream.text_stream.stopped = [], False
    return stream.text_stream


def stop_flag(*flags: threading.Event) -> Any:
    """A stopping criterion: a row is done once its flag is set (Ctrl-C, a client gone). One flag stands
    for every row; several are one per row of a merged call."""
    import torch
    from transformers.generation.stopping_criteria import StoppingCriteria

    class StopFlag(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if len(flags) == 1:
                return torch.full((input_ids.shape[0],), flags[0].is_set(), dtype=torch.bool, device=input_ids.device)
            return torch.tensor([f.is_set() for f in flags], dtype=torch.bool, device=input_ids.device)

    return StopFlag()
