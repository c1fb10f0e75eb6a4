"""The one thread on which a loaded model computes: every generate() call, serve's batch steps, the forward
passes of next-token and score, and the reordering of weights for oneDNN at load.

torch's OpenMP workers belong to the thread that starts a parallel region. Two threads taking turns on the CPU
each keep a team whose idle workers spin for a while, in each other's way: on 2 cores a fresh thread per call
decoded a batch of 4 up to 12% slower than the thread before it (benchmarks in docs/performance.md). One
long-lived thread keeps one team. Weights reordered for oneDNN must be reordered here too: reordered on the main
thread and multiplied on this one, the default model decoded 1.6x slower (24 against 38 tok/s in float32 on a
2-core AMD EPYC, the same in bfloat16), on every call, not only the first. Imports only the standard library.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

_ENGINE: list[ThreadPoolExecutor] = []
_IDENT: list[int] = []  # the engine thread's, once it has started

T = TypeVar("T")


def engine_thread() -> ThreadPoolExecutor:
    """The engine's thread (one, made on first use), which runs what is submitted one at a time."""
    if not _ENGINE:
        started = lambda: _IDENT.append(threading.get_ident())  # noqa: E731
        _ENGINE.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmcli-engine", initializer=started))
    return _ENGINE[0]


def on_engine(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work(*args, **kwargs)` on the engine thread, waiting for it; run in place when called there already (a
    serve request whose forward pass reloads a model that keep-alive let go: submitting and waiting from the
    engine thread itself would wait on itself for ever)."""
    if _IDENT and threading.get_ident() == _IDENT[0]:
        return work(*args, **kwargs)
    return engine_thread().submit(work, *args, **kwargs).result()
