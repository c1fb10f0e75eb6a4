"""The one stderr line `--compile` owes a user: whether this run compiled the decoding step, and for how long
(generate() compiles inside its first steps, where the time would otherwise pass for slow decoding). Read from
torch._dynamo's own compile-time record; silent where a torch has none. Imports torch lazily, nothing of llmcli
but the output layer.
"""

from __future__ import annotations

SAY_FROM = 0.5  # seconds: a compile served from inductor's warm cache still traces; under this it goes unsaid


def compile_seconds() -> float:
    """Seconds torch.compile has spent in this process so far (0.0 where torch keeps no record)."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:
        return 0.0
    return float(sum(compilation_time_metrics.get("_compile.compile_inner", ())))


def say_compiled(before: float) -> None:
    """The line, when the time since `before` (a compile_seconds() reading) is worth a line."""
    from llmcli.output import stderr_text

    spent = compile_seconds() - before
    if spent >= SAY_FROM:
        stderr_text(f"compiled the decoding step in {spent:.1f} s (inductor's cache in llmcli's home keeps it: "
                    "the next run with the same model, dtype and shapes compiles faster)")  # fmt: skip
