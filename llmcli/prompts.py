"""Where prompts come from: the argument, stdin (`-` or a pipe), --file, or one per line for batches."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from pathlib import Path

from llmcli.errors import LlmcliError, UsageError
from llmcli.lines import split_lines


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LlmcliError(f"is not UTF-8 text (bad byte at offset {exc.start})", path=source) from None


def stdin_has_data() -> bool:
    """Only pipes and files count: a terminal, /dev/null or an inherited socket never block a read."""
    if sys.stdin is None:
        return False
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except io.UnsupportedOperation:  # an in-memory stream (embedding, tests): it is data when not a terminal
        return not sys.stdin.isatty()
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def read_stdin() -> str:
    try:
        data = sys.stdin.buffer.read()
    except (OSError, ValueError):
        return ""
    return _decode(data, "stdin")


def read_file(path: str) -> str:
    p = Path(path)
    try:
        return _decode(p.read_bytes(), path)
    except FileNotFoundError:
        raise LlmcliError("no such file", path=path) from None
    except IsADirectoryError:
        raise LlmcliError("is a directory, not a prompt file", path=path) from None
    except OSError as exc:
        raise LlmcliError(f"cannot read: {exc.strerror or exc}", path=path) from None


def single_prompt(arg: str | None, file: str | None) -> str:
    """`cat notes.txt | llmcli generate "Summarise"`: the piped text, then the argument (as `llm` does).

    A single source (the argument, `--file`, or stdin through `-`) is taken exactly as given.
    """
    parts: list[str] = []
    if file:
        parts.append(read_file(file))
    if arg == "-":
        parts.append(read_stdin())
    else:
        if stdin_has_data():
            piped = read_stdin()
            if piped.strip():
                parts.append(piped)
        if arg is not None:
            parts.append(arg)
    # One source reaches the tokenizer byte for byte; sources merged (piped text and an argument) are joined
    # by one blank line, their trailing newlines dropped.
    text = parts[0] if len(parts) == 1 else "\n\n".join(p.rstrip("\n") for p in parts)
    if not text.strip():
        raise UsageError("empty prompt: give it as an argument, with --file, or on stdin")
    return text


def batch_prompts(each_line: bool, prompts_file: str | None, arg: str | None) -> list[str]:
    """--each-line: one prompt per stdin line; --prompts FILE: one per line, or JSONL {"prompt": ...}."""
    if prompts_file:
        text, source = read_file(prompts_file), prompts_file
    else:
        if not stdin_has_data() and arg != "-":
            raise UsageError("--each-line reads prompts from stdin, but nothing is piped in")
        text, source = read_stdin(), "stdin"
    prompts = []
    for number, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LlmcliError(f"line {number}: not valid JSON ({exc.msg})", path=source) from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise LlmcliError(f'line {number}: expected {{"prompt": "..."}}', path=source)
            prompts.append(obj["prompt"])
        else:
            prompts.append(line)
    if arg and arg != "-":
        prompts = [f"{p}\n\n{arg}" for p in prompts]
    if not prompts:
        raise UsageError(f"no prompts found in {source}")
    return prompts


def chat_messages(system: str | None, turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """The message list a chat template takes: the system message, if any, then the turns."""
    return ([{"role": "system", "content": system}] if system else []) + list(turns)


def check_system(*, chat: bool, system: str | None) -> None:
    """--system is a chat message: without --chat there is nowhere to put it."""
    if system and not chat:
        raise UsageError("--system goes with --chat")
