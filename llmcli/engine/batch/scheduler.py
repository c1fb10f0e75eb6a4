"""`llmcli serve`'s step scheduler: every single-prompt request that can share a forward pass joins one
running batch at the next step, whatever its sampling flags, seed, length or stop strings (continuous
batching), and leaves it the step it is done or its client goes.

It runs on the engine thread, in slices: between two steps it hands the thread to other queued work (a
request that runs apart, a score) and queues itself again behind it. The batch grows while the KV cache
its rows need fits the budget (or up to a row cap, when one is set); requests beyond wait their turn.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from llmcli.engine.batch.rows import Row, row_result
from llmcli.engine.batch.stepper import Batch, cache_mergeable, wide_cache_dtype
from llmcli.engine.generate.calls import FALLBACK_MAX_NEW_TOKENS

# generate() settings a row honours itself (token choice through transformers' processors, or its stops);
# a request with any other setting runs apart, through generate().
ROW_KEYS = {
    "max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_p", "top_k", "min_p", "typical_p",
    "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids",
    "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "eos_token_id", "pad_token_id", "stop_strings",
    "renormalize_logits", "remove_invalid_values", "top_h", "frequency_penalty", "presence_penalty",
}  # fmt: skip


# Prompts that arrive together are prefilled in one pass up to this many tokens (padded), so that a crowd of
# long prompts does not stall the running rows for one long pass.
PREFILL_TOKENS = 4096


@dataclass
class SchedulerSettings:
    invariant: bool = False  # --batch-invariant: rows share a batch only where the output equals a solo run
    max_rows: int | None = None  # a cap on the batch (None: the KV budget alone)
    kv_budget_bytes: int | None = None  # the KV cache the rows of one model may hold (None: from free memory)
    plain_step: bool = False  # --no-compile: a lone row never steps through a kept compiled library


class Scheduler:
    def __init__(self, settings: SchedulerSettings):
        self.settings = settings
        self.lock = threading.Lock()
        self.waiting: list[Any] = []  # GenerationStreams not yet in a batch
        self.batches: dict[int, Batch] = {}  # id(loaded) → its batch
        self.streams: dict[int, Any] = {}  # id(row) → its stream
        self.scheduled = False
        self.mergeable: dict[int, bool] = {}

    # ------------------------------------------------------------------ from request threads

    def accepts(self, call: Any) -> bool:
        """Whether a call runs as a row here: one prompt, one output, no beams, log-probabilities or draft model,
        only settings a row honours (a grammar and the penalties are the row's own processors), and a cache the
        batch can stack."""
        if not call.single or call.logprobs is not None or call.assistant is not None:
            return False
        if any(k not in ROW_KEYS for k in call.kwargs):
            return False
        key = id(call.loaded.model)
        if key not in self.mergeable:
            self.mergeable[key] = cache_mergeable(call.loaded.model)
        return self.mergeable[key]

    def shares(self, loaded: Any) -> bool:
        """Whether rows of this model may share a batch: always, unless --batch-invariant asks for outputs
        identical to a solo run."""
        return not self.settings.invariant or invariant_batches(loaded)

    def submit(self, stream: Any) -> None:
        from llmcli.engine.load.worker import engine_thread

        with self.lock:
            self.waiting.append(stream)
            if self.scheduled:
                return
            self.scheduled = True
        engine_thread().submit(self._slice)

    def withdraw(self, stream: Any) -> bool:
        """A stream stopped before its row began leaves the queue; False when its row is already running."""
        with self.lock:
            if stream in self.waiting:
                self.waiting.remove(stream)
                return True
            return False

    def rows(self) -> int:
        return sum(len(b) for b in list(self.batches.values()))

    # ------------------------------------------------------------------ on the engine thread

    def _slice(self) -> None:
        """Steps until nothing is left to do, or until other work waits for the engine thread."""
        import torch

        try:
            with torch.inference_mode():
                self._run_slice()
        except BaseException as exc:  # noqa: BLE001 - never leave rows hanging: every one gets the error
            self._fail_everything(exc)

    def _run_slice(self) -> None:
        from llmcli.engine.load.worker import engine_thread

        while True:
            self._admit_waiting()
            with self.lock:
                if not any(self.batches.values()) and not self.waiting:
                    self.batches.clear()
                    self.scheduled = False
                    return
            for key, batch in list(self.batches.items()):
                self._step(batch)
                if not batch.rows:  # an empty batch lets go of its model (--keep-alive may unload it)
                    del self.batches[key]
            if engine_thread()._work_queue.qsize():  # others wait: let them run, then carry on
                engine_thread().submit(self._slice)
                return

    def _fail_everything(self, exc: BaseException) -> None:
        """An error outside a step (admission, a text stream): the rows and the waiting requests end with it,
        and the scheduler starts afresh with the next request."""
        for stream in list(self.streams.values()):  # in a batch, or being admitted to one
            stream.fail(exc)
        with self.lock:
            waiting, self.waiting = self.waiting, []
            self.batches.clear()
            self.streams.clear()
            self.scheduled = False
        for stream in waiting:
            stream.fail(exc)

    def _admit_waiting(self) -> None:
        """The waiting requests that fit join their model's batch, prefilled together (up to PREFILL_TOKENS
        of padded prompt per pass; the rest join at the next step)."""
        with self.lock:
            candidates = list(self.waiting)
        groups: dict[int, list[Any]] = {}
        for stream in candidates:
            loaded = stream.call.loaded
            batch = self._batch_of(loaded)
            group = groups.setdefault(id(loaded), [])
            if not self._room(batch, [s.call for s in group] + [stream.call]):
                continue
            with self.lock:
                if stream not in self.waiting:
                    continue
                self.waiting.remove(stream)
            if stream.cancelled.is_set():
                stream.complete(None)
            else:
                group.append(stream)
        for key, group in groups.items():
            if group:
                self._start(self.batches[key], group)

    def _batch_of(self, loaded: Any) -> Batch:
        batch = self.batches.get(id(loaded))
        if batch is None:
            from llmcli.engine.load.devices import input_device

            lone, many = self._kept_steps(loaded)
            batch = Batch(loaded.model, input_device(loaded.model), lone=lone, many=many)
            self.batches[id(loaded)] = batch
        return batch

    def _kept_steps(self, loaded: Any) -> tuple[Any, Any]:
        """The kept compiled steps a lone row and several rows of this model decode through (engine.step.lone),
        unless --no-compile or --batch-invariant (their rounding is not the batched kernel's) keep them on the
        forward."""
        if self.settings.plain_step or self.settings.invariant:
            return None, None
        from llmcli.engine.step.lone import lone_step, rows_step

        return lone_step(loaded), rows_step(loaded)

    def _room(self, batch: Batch, calls: list[Any]) -> bool:
        """Whether the batch can take these calls too (the last one is the newcomer)."""
        loaded = calls[-1].loaded
        rows = len(batch) + len(calls)
        if rows == 1:
            return True
        if not self.shares(loaded):
            return False
        if self.settings.max_rows is not None and rows > self.settings.max_rows:
            return False
        if len(calls) > 1 and len(calls) * max(len(c.encoded[0]) for c in calls) > PREFILL_TOKENS:
            return False
        # Left-padded: the cache holds every row at the longest row's length.
        longest = max([_reserve(r.call) for r in batch.rows] + [_reserve(c) for c in calls])
        return rows * longest * kv_bytes_per_token(loaded) <= self._budget(loaded)

    def _budget(self, loaded: Any) -> int:
        if self.settings.kv_budget_bytes is None:
            self.settings.kv_budget_bytes = default_kv_budget(loaded.device)
        return self.settings.kv_budget_bytes

    def _start(self, batch: Batch, streams: list[Any]) -> None:
        rows = []
        for stream in streams:
            try:
                rows.append(Row(stream.call, device=batch.device))
            except (ValueError, TypeError) as exc:  # settings transformers refuses: the request's own error
                from llmcli.errors import UsageError, squash

                stream.fail(UsageError(f"generate() rejected the settings: {squash(exc)}"))
        streams = [s for s in streams if not s.job.done()]
        if not rows:
            return
        for stream, row in zip(streams, rows, strict=True):
            stream.attach(row)
            self.streams[id(row)] = stream
        try:
            done = batch.admit(rows)
        except BaseException as exc:  # noqa: BLE001 - a failed prefill fails its rows (memory)
            for row in rows:
                self.streams.pop(id(row)).fail(exc)
            return
        for row in rows:
            self.streams[id(row)].deliver(row)
        for row in done:
            self.streams.pop(id(row)).complete(row_result(row, interrupted=False))

    def _step(self, batch: Batch) -> None:
        gone = [r for r in batch.rows if self.streams[id(r)].cancelled.is_set()]
        for row in batch.drop(gone):
            self.streams.pop(id(row)).complete(row_result(row, interrupted=True))
        if not batch.rows:
            return
        try:
            done = batch.step()
        except BaseException as exc:  # noqa: BLE001 - a failed step fails every row in it
            for row in batch.drop(list(batch.rows)):
                self.streams.pop(id(row)).fail(exc)
            return
        for row in batch.rows + done:
            self.streams[id(row)].deliver(row)
        for row in done:
            self.streams.pop(id(row)).complete(row_result(row, interrupted=False))


def invariant_batches(loaded: Any) -> bool:
    """float32 weights on the CPU: a batch's outputs equal solo runs (measured; docs/serve.md). Not bf16
    (other rounding per batch shape), nor int8, whose activations are quantized per batch, nor GPU kernels
    chosen per shape."""
    return loaded.dtype == "float32" and loaded.quantize == "none" and loaded.device == "cpu"


def _reserve(call: Any) -> int:
    """The cache columns a row may come to hold: its prompt, its tokens, and the spare room the batch's cache
    layers take ahead (kv_room.ROOM)."""
    from llmcli.engine.batch.kv_room import ROOM

    return len(call.encoded[0]) + int(call.kwargs.get("max_new_tokens") or FALLBACK_MAX_NEW_TOKENS) + ROOM


def kv_bytes_per_token(loaded: Any) -> int:
    """Keys and values of one token across the layers, as the batch's cache holds them (the model's dtype, or
    float32: stepper.wide_cache_dtype; modelfs.memory's count over config.json's geometry)."""
    from llmcli.modelfs.config import geometry
    from llmcli.modelfs.memory import kv_bytes_per_token as per_token

    wide = wide_cache_dtype(loaded.model)
    count = per_token(geometry(loaded.config), (wide or loaded.model.dtype).itemsize)
    if count is None:
        raise ValueError("config.json does not give the KV cache's shape (layers, heads, head size)")
    return count


def default_kv_budget(device: str) -> int:
    """Half the memory free now: the device's on a GPU, the machine's available memory on the CPU."""
    from llmcli.modelfs.memory import device_memory

    return device_memory(device)["free_bytes"] // 2


def wait_rows_done(scheduler: Scheduler, timeout: float = 60.0) -> bool:
    """For tests: True once no row runs or waits."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with scheduler.lock:
            if not scheduler.scheduled:
                return True
        time.sleep(0.01)
    return False
