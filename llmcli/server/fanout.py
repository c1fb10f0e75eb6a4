"""A streamed request for n > 1 choices: n single-choice calls, each a row of the step scheduler (so they
decode side by side in one batch), their events merged into one stream and tagged with their choice index.

Choice i runs under the request's seed + i, so that a seeded request streams the same choices every time (they
differ from a non-streamed n > 1 request's, which draws all n from one generate() call under one seed).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

DONE = object()


class Fanout:
    def __init__(self, streams: list[Any]):
        self.streams = streams
        self.merged: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        for index, stream in enumerate(streams):
            threading.Thread(target=self._pump, args=(index, stream), daemon=True).start()

    def _pump(self, index: int, stream: Any) -> None:
        try:
            for event in stream:
                self.merged.put((index, event))
        except BaseException as exc:  # noqa: BLE001 - raised to the consumer
            self.merged.put((index, exc))
        self.merged.put((index, DONE))

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        running = len(self.streams)
        while running:
            index, event = self.merged.get()
            if event is DONE:
                running -= 1
            elif isinstance(event, BaseException):
                raise event
            else:
                yield index, event

    def stop(self) -> list[Any]:
        self.cancelled.set()
        return [result for stream in self.streams for result in stream.stop()]
