"""One request's decoding state inside serve's step scheduler: its own logits processors (transformers', the
penalties, a grammar), random generator and stop conditions, so that rows with different flags share a
forward pass.

Each row chooses its token exactly as generate()'s sampling loop does for a lone prompt: float32 logits,
the processors transformers itself builds from the row's GenerationConfig (given only the row's own ids,
never a neighbour's padding), then argmax or one multinomial draw from the row's generator. A seeded row
draws from a generator seeded like `torch.manual_seed(seed)`, so its tokens do not depend on its neighbours.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from llmcli.engine.generate.calls import FALLBACK_MAX_NEW_TOKENS
from llmcli.engine.generate.min_length import with_kept_masks
from llmcli.engine.generate.penalties import split_penalties
from llmcli.engine.generate.streaming import first_stop


@dataclass
class RowStats:
    """A row's token timer (the marks collect.stats_of reads from generate()'s TokenTimer) and what it saw of
    the batch: the rows it decoded beside, at most and on average."""

    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_token_at: float | None = None
    count: int = 0  # tokens chosen, one per step
    rows_total: int = 0
    rows_max: int = 1
    compiled: int = 0  # steps decoded alone through the compiled library (engine.step.lone)

    def step(self, rows: int) -> None:
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now
        self.count += 1
        self.rows_total += rows
        self.rows_max = max(self.rows_max, rows)

    @property
    def rows_mean(self) -> float:
        return self.rows_total / self.count if self.count else 1.0


class Row:
    """A prompt being decoded: its ids, its token choice, and when it is done."""

    def __init__(self, call: Any, *, device: Any):
        import torch
        from transformers.generation.logits_process import LogitsProcessorList

        model = call.loaded.model
        self.call = call
        self.prompt = list(call.encoded[0])
        self.generated: list[int] = []
        settings, penalties = split_penalties(_settings(call.kwargs))
        grammar = [call.constraint.processor()] if call.constraint is not None else []  # a fresh matcher per row
        self.config, _ = model._prepare_generation_config(None, **settings)
        # The end-of-text tensors that min_new_tokens and friends read, as generate() prepares them.
        model._prepare_special_tokens(self.config, kwargs_has_attention_mask=True, device=device)
        prompt = torch.tensor([self.prompt], device=device)
        processors = model._get_logits_processor(
            generation_config=self.config, input_ids_seq_length=len(self.prompt), encoder_input_ids=prompt,
            logits_processor=LogitsProcessorList(penalties + grammar), device=device, model_kwargs={},
        )  # fmt: skip
        # called one by one: LogitsProcessorList reads each one's signature on every call (~30 us a processor)
        self.processors = list(with_kept_masks(processors))
        self.sampling = bool(self.config.do_sample)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(call.seed if call.seed is not None else random.getrandbits(63))
        self.max_new = self.config.max_new_tokens or FALLBACK_MAX_NEW_TOKENS
        self.stops = call.stops
        self.finish: str | None = None  # "stop" | "stop_string" | "length" once done
        self.stats = RowStats()

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.generated)

    def choose(self, logits: Any) -> int:
        """The next token from this row's float32 logits (shape [vocab])."""
        import torch

        ids = torch.tensor([self.prompt + self.generated], device=logits.device)
        scores = logits.unsqueeze(0)
        for processor in self.processors:
            scores = processor(ids, scores)
        if self.sampling:
            probs = torch.nn.functional.softmax(scores, dim=-1)
            return int(torch.multinomial(probs, num_samples=1, generator=self.generator)[0, 0])
        return int(torch.argmax(scores, dim=-1)[0])

    def accept(self, token: int, rows: int) -> None:
        """The chosen token joins the row; the row is done at an end-of-text id, a stop string or its length."""
        self.generated.append(token)
        self.stats.step(rows)
        if token in self.call.eos:
            self.finish = "stop"
        elif self.stops and first_stop(self.text(), self.stops) is not None:
            self.finish = "stop_string"
        elif len(self.generated) >= self.max_new:
            self.finish = "length"

    def text(self) -> str:
        return self.call.tokenizer.decode(self.generated, skip_special_tokens=True)


def _settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The row's settings as a GenerationConfig takes them; its stop strings the row checks itself (a row
    holds only the scheduler's ROW_KEYS)."""
    return {k: v for k, v in kwargs.items() if k != "stop_strings"}


def row_result(row: Row, *, interrupted: bool) -> Any:
    """The row as generate() would have reported it alone: its Result, with the batch it shared in Stats."""
    from dataclasses import replace

    from llmcli.engine.generate.collect import results_of, stats_of

    call = replace(row.call, width=len(row.prompt))
    [result] = results_of(call, [row.prompt + row.generated], None, interrupted=interrupted)
    marks = row.stats
    result.stats = stats_of(call, [result], marks, marks.started, time.perf_counter())
    result.stats.attn_implementation = getattr(call.loaded.model.config, "_attn_implementation", None)
    result.stats.requests_in_batch = marks.rows_max
    result.stats.batch_rows_mean = round(marks.rows_mean, 2)
    result.stats.compiled_step = "loaded" if marks.compiled else None
    return result
