"""The one place that turns failures into a one-line message and a documented exit code.

Exit codes: 0 ok, 1 error (bad model files, load failures, resources), 2 usage error,
130 interrupted (Ctrl-C), 141 stdout closed early (e.g. piped into `head`).
"""

from __future__ import annotations

import os
import sys

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class LlmcliError(Exception):
    """An error the user can act on. `path` names the file at fault, when there is one."""

    exit_code = EXIT_ERROR
    quiet = False  # exit with the code but print nothing (e.g. the reader of stdout went away)

    def __init__(self, message: str, path: object | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.hint = hint

    def one_line(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return " ".join(text.split())


class UsageError(LlmcliError):
    exit_code = EXIT_USAGE


class Interrupted(LlmcliError):
    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str = "interrupted"):
        super().__init__(message)


def debug_enabled() -> bool:
    return os.environ.get("LLMCLI_DEBUG", "") not in ("", "0")


def report(exc: BaseException) -> int:
    """Print the error on stderr as one line and return its exit code."""
    if isinstance(exc, LlmcliError):
        line, code = exc.one_line(), exc.exit_code
    elif isinstance(exc, KeyboardInterrupt):
        line, code = "interrupted", EXIT_INTERRUPTED
    elif isinstance(exc, MemoryError):
        line, code = "out of memory", EXIT_ERROR
    else:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        line = f"internal error: {type(exc).__name__}: {detail} (set LLMCLI_DEBUG=1 for a traceback)"
        code = EXIT_ERROR
    if isinstance(exc, LlmcliError) and exc.quiet:
        return code
    if debug_enabled():
        import traceback

        traceback.print_exception(exc)
    try:
        sys.stderr.write(f"llmcli: error: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return code
