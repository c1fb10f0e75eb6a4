"""Each model family's tool-call format: how its calls are written in the answer's text, and read back.

A reader takes the whole answer and returns its content (the text around the calls) and the calls as
`{"name", "arguments"}`, or None when the text holds no well-formed call in that format. Calls are JSON values
decoded one after another from where each starts (`raw_decode`, as vLLM's parsers read them), so a `;`, a `}`
or the format's closing tag inside an argument's string is part of the argument, never the end of a call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Read = tuple[str | None, list[dict[str, Any]]] | None
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Format:
    read: Callable[[str], Read]
    opening: str  # where a call may begin in a stream: text is held back from there
    forced_prefix: str  # what the generation prompt ends with when a call is forced


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _json_at(text: str, at: int) -> tuple[Any, int] | None:
    """The JSON value that starts at `at` (after blanks) and where it ends, or None."""
    try:
        return _DECODER.raw_decode(text, _skip_space(text, at))
    except ValueError:
        return None


def calls_in(value: Any, arguments_key: str) -> list[dict[str, Any]] | None:
    """One call object or a list of them, {"name": str, arguments_key: object or JSON text}; None if malformed."""
    calls = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        arguments = item.get(arguments_key, item.get("arguments", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append({"name": item["name"], "arguments": arguments})
    return calls


def calls_in_text(text: str, arguments_key: str = "arguments") -> list[dict[str, Any]] | None:
    """The calls when the whole text is their JSON (a forced answer)."""
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    return calls_in(value, arguments_key)


def _around(text: str, start: int, end: int) -> str | None:
    """The content: what stands before the first call and after the last."""
    return (text[:start] + text[end:]).strip() or None


HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"


def read_hermes(text: str) -> Read:
    """`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, repeated; the last one may be left open."""
    start = text.find(HERMES_OPEN)
    if start == -1:
        return None
    calls, at = [], start
    while text.startswith(HERMES_OPEN, at):
        decoded = _json_at(text, at + len(HERMES_OPEN))
        found = calls_in(decoded[0], "arguments") if decoded is not None else None
        if found is None:
            return None
        calls += found
        at = _skip_space(text, decoded[1])
        if text.startswith(HERMES_CLOSE, at):
            at = _skip_space(text, at + len(HERMES_CLOSE))
    return _around(text, start, at), calls


def read_llama3(text: str) -> Read:
    """Llama 3's JSON calls, `{"name": ..., "parameters": {...}}`, one after another (`;` between them): the
    whole answer is calls, or none of it is."""
    body = text.strip().removeprefix("<|python_tag|>")
    at = _skip_space(body, 0)
    if not body.startswith("{", at):
        return None
    calls = []
    while at < len(body):
        decoded = _json_at(body, at)
        found = calls_in(decoded[0], "parameters") if decoded is not None else None
        if found is None:
            return None
        calls += found
        at = _skip_space(body, decoded[1])
        if body.startswith(";", at):
            at = _skip_space(body, at + 1)
    return None, calls


MISTRAL_TAG, MISTRAL_ARGS, MISTRAL_CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"


def read_mistral(text: str) -> Read:
    """Mistral's calls: the older `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` and the newer
    `[TOOL_CALLS]name[ARGS]{...}` (with `[CALL_ID]id` before `[ARGS]` in some tokenizer versions), repeated."""
    start = text.find(MISTRAL_TAG)
    if start == -1:
        return None
    calls, at = [], start
    while text.startswith(MISTRAL_TAG, at):
        at = _skip_space(text, at + len(MISTRAL_TAG))
        if text.startswith(("[", "{"), at):
            decoded = _json_at(text, at)
            found = calls_in(decoded[0], "arguments") if decoded is not None else None
        else:
            args = text.find(MISTRAL_ARGS, at)
            name = text[at:args].split(MISTRAL_CALL_ID)[0].strip() if args != -1 else ""
            decoded = _json_at(text, args + len(MISTRAL_ARGS)) if name else None
            found = calls_in({"name": name, "arguments": decoded[0]}, "arguments") if decoded is not None else None
        if found is None:
            return None
        calls += found
        at = _skip_space(text, decoded[1])
    return _around(text, start, at), calls


FORMATS = {
    "hermes": Format(read_hermes, opening=HERMES_OPEN, forced_prefix=HERMES_OPEN + "\n"),
    "llama3_json": Format(read_llama3, opening="{", forced_prefix=""),
    "mistral": Format(read_mistral, opening=MISTRAL_TAG, forced_prefix=MISTRAL_TAG),
}
