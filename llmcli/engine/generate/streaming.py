"""What runs inside generate() while it decodes: the token timer, the text stream, the score tap."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


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
        # One token per row per step, except in assisted decoding, which hands over (1, accepted + 1) at once.
        self.count += value.shape[-1] if getattr(value, "dim", lambda: 1)() > 1 else 1
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
        text = self.text()
        if text.endswith("\ufffd"):  # an unfinished multi-byte character: wait for the next token
            return
        cut = first_stop(text, self.stop_strings)
        if cut is not None:
            self.stopped = True
            self._emit(text[:cut])
            return
        # Hold back what could be the start of a stop string.
        self._emit(text[: max(self.printed, len(text) - self.hold)] if self.hold else text)

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def _emit(self, upto: str) -> None:
        if len(upto) > self.printed:
            self.write(upto[self.printed :])
            self.printed = len(upto)

    def finish(self, final_text: str) -> None:
        self._emit(final_text)


def first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None
