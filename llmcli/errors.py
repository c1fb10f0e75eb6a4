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


def squash(exc: BaseException, limit: int | None = 300) -> str:
    """A library's exception text on one line, cut to `limit` characters, for a one-line error message."""
    return " ".join(str(exc).split())[:limit]


def debug_enabled() -> bool:
    return os.environ.get("LLMCLI_DEBUG", "") not in ("", "0")


def _typer_usage(exc: BaseException) -> tuple[str, int] | None:
    """Typer's parse-time errors (bad choice, missing argument, unknown option) as one line and exit 2.

    Duck-typed: Typer vendors its own click, whose exception classes are not public API.
    """
    message = getattr(exc, "format_message", None)
    if message is None or not isinstance(getattr(exc, "exit_code", None), int):
        return None
    ctx = getattr(exc, "ctx", None)
    if "\n" in message():  # a command given no arguments: its help, as Typer prints it
        exc.show()
        return "", exc.exit_code
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"{message().replace('Value error, ', '')}{hint}", exc.exit_code


def report(exc: BaseException) -> int:
    """Print the error on stderr as one line and return its exit code."""
    usage = _typer_usage(exc)
    if usage is not None:
        if usage[0]:
            write_stderr(f"llmcli: error: {usage[0]}")
        return usage[1]
    if type(exc).__name__ == "Abort":  # Typer's word for Ctrl-C outside a command's own handling
        exc = KeyboardInterrupt()
    if isinstance(exc, LlmcliError):
        line, code = exc.one_line(), exc.exit_code
    elif isinstance(exc, KeyboardInterrupt):
        line, code = "interrupted", EXIT_INTERRUPTED
    elif isinstance(exc, MemoryError):
        line, code = "out of memory", EXIT_ERROR
    else:
        detail = squash(exc, limit=None) or type(exc).__name__
        line = f"internal error: {type(exc).__name__}: {detail} (set LLMCLI_DEBUG=1 for a traceback)"
        code = EXIT_ERROR
    if isinstance(exc, LlmcliError) and exc.quiet:
        return code
    if debug_enabled():
        import traceback

        traceback.print_exception(exc)
    write_stderr(f"llmcli: error: {line}")
    return code


def write_stderr(line: str) -> None:
    """One line on stderr; a closed or broken stderr is no reason to fail."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
