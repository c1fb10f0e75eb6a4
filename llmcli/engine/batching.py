"""`llmcli serve`'s batching: single-prompt greedy calls that wait together share one generate() call.

Why plain generate() over transformers' continuous batching, and why only greedy calls with the same flags
(measured on the default model, 8 prompts of 64 tokens, docs/performance.md): left-padded generate() ran
3.5x one stream in float32 with every output identical to its solo run; continuous batching (generate_batch)
ran 1.2x. Sampling is left out because one batch shares one random stream, so a seed could no longer
reproduce its output alone; log-probabilities and grammars because their values are the point and must not
depend on the neighbours.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

# Flags under which generate() refuses a batch or whose draft tokens depend on the row.
_SOLO_KEYS = ("prompt_lookup_num_tokens", "assistant_model")


class Batcher:
    """The streams waiting for the engine thread, from which the one that runs first picks its peers."""

    def __init__(
        self,
        *,
        max_batch: int,
        window_seconds: float = 0.01,
        patience_seconds: float = 0.25,
        restart_seconds: float = 0.0,
    ):
        self.max_batch = max_batch
        # A call that started short of a full batch stops and starts again with the requests that arrive in
        # its first `restart_seconds`: only where a batch's outputs equal solo runs (greedy float32), so that
        # the rerun repeats the tokens already streamed (0: never).
        self.restart_seconds = restart_seconds
        # A call waits `window` for others to arrive (requests sent together reach the server a few ms apart),
        # and up to `patience` for those that have arrived but are still being encoded. Both add to its time
        # to first token; a lone request pays the window only.
        self.window, self.patience = window_seconds, patience_seconds
        self.lock = threading.Lock()
        self.waiting: list[Any] = []
        self.arriving = 0

    def expect(self) -> None:
        """A request has arrived and will become a stream soon (the server calls this before encoding)."""
        with self.lock:
            self.arriving += 1

    def arrived(self) -> None:
        with self.lock:
            self.arriving -= 1

    def joins(self, call: Any) -> bool:
        """Whether a call's output stays what it would be alone when it shares a batch."""
        solo_flag = any(call.kwargs.get(k) for k in _SOLO_KEYS)
        return (
            self.max_batch > 1
            and call.single
            and call.seed is None
            and call.logprobs is None
            and call.constraint is None
            and call.assistant is None
            and not solo_flag
        )

    def add(self, stream: Any) -> None:
        with self.lock:
            self.waiting.append(stream)

    def withdraw(self, stream: Any) -> bool:
        """A stream stopped before it ran leaves the queue; False when it has already been taken."""
        with self.lock:
            if stream in self.waiting:
                self.waiting.remove(stream)
                return True
            return False

    def take(self, leader: Any) -> list[Any]:
        """On the engine thread: the leader and its peers (same model, same flags), or [] when an earlier
        batch took the leader. While the batch is not full and requests are still arriving, waits for them."""
        while True:
            with self.lock:
                if leader not in self.waiting:
                    return []
                peers = [s for s in self._peers(leader.call) if s is not leader][: self.max_batch - 1]
                waited = time.monotonic() - leader.created
                full = len(peers) + 1 >= self.max_batch
                if full or (waited >= self.window and not self.arriving) or waited >= self.patience:
                    return self._claim([leader, *peers])
            time.sleep(0.002)

    def has_peers(self, streams: list[Any]) -> bool:
        with self.lock:
            return self.max_batch > len(streams) and bool(self._peers(streams[0].call))

    def join(self, streams: list[Any]) -> list[Any]:
        """The running streams and the compatible ones now waiting, as one group (up to max_batch)."""
        with self.lock:
            return self._claim([*streams, *self._peers(streams[0].call)[: self.max_batch - len(streams)]])

    def _peers(self, call: Any) -> list[Any]:
        """The waiting streams that can share a generate() call with `call` (under the lock)."""
        return [s for s in self.waiting if s.call.loaded is call.loaded and s.call.kwargs == call.kwargs]

    def _claim(self, group: list[Any]) -> list[Any]:
        """The group leaves the queue; marked shared under the lock, so that a stop() from now on does not wait."""
        for stream in group:
            if stream in self.waiting:
                self.waiting.remove(stream)
            stream.shared = len(group) > 1
        return group


def restart_criterion(batcher: Batcher, streams: list[Any], deadline: float) -> Any:
    """A stopping criterion that ends a young call when requests it could share arrive (see Batcher);
    `deadline` is counted from the group's first start, so that restarts waste at most restart_seconds."""
    import torch
    from transformers.generation.stopping_criteria import StoppingCriteria

    class Restart(StoppingCriteria):
        def __init__(self) -> None:
            self.deadline = deadline
            self.fired = False

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if not self.fired and time.monotonic() < self.deadline and batcher.has_peers(streams):
                self.fired = True
            return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)

    return Restart()


def merged(calls: list[Any]) -> Any:
    """One call whose rows are the given single-prompt calls, in order."""
    first = calls[0]
    encoded = [c.encoded[0] for c in calls]
    return replace(first, prompts=[c.prompts[0] for c in calls], encoded=encoded, width=max(len(i) for i in encoded))
