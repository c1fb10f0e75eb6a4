"""Batch jobs that survive: `generate --prompts in.jsonl --server URL --output out.jsonl`.

Prompts go to the server `--concurrency` at a time; results are written in input order, one whole line per
`write()`, so that out.jsonl is always a prefix of the answers. `--resume` checks that prefix against the
input (a trailing partial line from a killed run is cut) and sends only what is missing: a job killed at 60%
resumes with nothing lost and nothing written twice. 429, 503 and connection errors are retried with backoff.
Torch-free: this runs in the client.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from llmcli.errors import LlmcliError, UsageError
from llmcli.lines import split_lines

RETRIES = 6


@dataclass
class JobSpec:
    output: Path
    concurrency: int = 4
    resume: bool = False


def answered(path: Path, prompts: list[str]) -> int:
    """How many prompts out.jsonl already answers, in order; a partial last line is cut off the file."""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(len(complete))
    lines = split_lines(complete.decode("utf-8"))
    if len(lines) > len(prompts):
        raise LlmcliError(f"holds {len(lines)} answers for {len(prompts)} prompts: not this job's output", path=path)
    for number, line in enumerate(lines, 1):
        try:
            prompt = json.loads(line)["prompt"]
        except (ValueError, KeyError, TypeError):
            raise LlmcliError(f"line {number} is not a generate record", path=path) from None
        if prompt != prompts[number - 1]:
            raise LlmcliError(f"line {number} answers another prompt than line {number} of the input", path=path)
    return len(lines)


def start_index(spec: JobSpec, prompts: list[str]) -> int:
    exists = spec.output.exists() and spec.output.stat().st_size > 0
    if exists and not spec.resume:
        raise UsageError(f"{spec.output} exists; --resume continues that job, or remove it")
    return answered(spec.output, prompts) if exists else 0


def with_retries(send: Callable[[], dict], *, sleep: Callable[[float], None] = time.sleep) -> dict:
    """`send()`, again after 0.5, 1, 2, ... s when the server is busy (429, 503) or unreachable."""
    delay = 0.5
    for attempt in range(RETRIES):
        try:
            return send()
        except LlmcliError as exc:
            if not getattr(exc, "retryable", False) or attempt == RETRIES - 1:
                raise
            sleep(getattr(exc, "retry_after", None) or delay)
            delay *= 2
    raise AssertionError("unreachable")


def run(prompts: list[str], spec: JobSpec, send: Callable[[str], dict]) -> int:
    """Sends the unanswered prompts; returns how many this run answered."""
    first = start_index(spec, prompts)
    todo = range(first, len(prompts))
    progress = Progress(first, len(prompts))
    done: dict[int, dict] = {}
    following = first
    fd = os.open(spec.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with ThreadPoolExecutor(spec.concurrency) as pool:
            pending: dict[Future, int] = {}
            queue = iter(todo)

            def submit_next() -> None:
                index = next(queue, None)
                if index is not None:
                    pending[pool.submit(with_retries, lambda: send(prompts[index]))] = index

            for _ in range(spec.concurrency):
                submit_next()
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done[pending.pop(future)] = future.result()
                    submit_next()
                while following in done:  # in input order: the file stays a prefix of the answers
                    line = json.dumps(done.pop(following), ensure_ascii=False) + "\n"
                    os.write(fd, line.encode("utf-8"))
                    following += 1
                    progress.step()
    finally:
        os.close(fd)
        progress.end()
    return following - first


class Progress:
    """One line on a terminal's stderr: done/total, rate, ETA; nothing when stderr is not a terminal."""

    def __init__(self, done: int, total: int):
        self.start_done, self.done, self.total = done, done, total
        self.started = time.monotonic()
        self.enabled = sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        seconds = time.monotonic() - self.started
        rate = (self.done - self.start_done) / seconds if seconds > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        sys.stderr.write(f"\r{self.done}/{self.total} prompts  {rate:.2f}/s  ETA {eta:.0f} s ")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
