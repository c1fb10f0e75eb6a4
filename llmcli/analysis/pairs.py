"""Preference data in TRL's formats, read and checked before any model loads (pure: no torch, no tokenizer).

One JSON object a line. Pairs, standard: `prompt`, `chosen`, `rejected` as strings. Conversational: the same
keys as lists of messages (`{"role", "content"}`). Implicit prompt: `chosen` and `rejected` only, the prompt
being what they share at the start, found as TRL's `extract_prompt` finds it (characters for strings, whole
messages for conversations; a space before the split stays with the completions). Unpaired (TRL's
prompt-completion format, KTO's with a boolean `label`): `prompt` and `completion`, strings or messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError
from llmcli.lines import split_lines


class PairError(LlmcliError):
    """A line of the pairs file that cannot be a preference pair."""


@dataclass
class Pair:
    line: int  # 1-based line of the file
    prompt: Any  # a string, or a list of messages
    chosen: Any
    rejected: Any

    @property
    def conversational(self) -> bool:
        return isinstance(self.chosen, list)


@dataclass
class Unpaired:
    line: int
    prompt: Any  # a string, or a list of messages
    completion: Any
    label: bool | None = None  # KTO's: desirable (true) or undesirable (false)


def parse_unpaired(raw: str, number: int, *, labelled: bool) -> Unpaired:
    where = f"line {number}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PairError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(value, dict) or "completion" not in value:
        wanted = "prompt, completion and label" if labelled else "a completion (and its prompt)"
        raise PairError(f"{where}: expected {wanted}")
    prompt, completion = value.get("prompt", ""), value["completion"]
    conversational = isinstance(completion, list)
    if not (isinstance(completion, str) or conversational) or not completion:
        raise PairError(f"{where}: completion must be a non-empty string or list of messages")
    if isinstance(prompt, list) != conversational or not isinstance(prompt, str | list):
        raise PairError(f"{where}: prompt and completion must both be strings or both lists of messages")
    _kind(completion, f"{where}: completion")
    _kind(prompt, f"{where}: prompt", allow_empty=True)
    label = value.get("label")
    if labelled and not isinstance(label, bool):
        raise PairError(f"{where}: label must be true (desirable) or false (undesirable)")
    return Unpaired(number, prompt or ([] if conversational else ""), completion, label if labelled else None)


def read_unpaired(path: Path, *, labelled: bool, skip_bad: bool = False) -> tuple[list[Unpaired], list[str]]:
    """The file's unpaired rows (with `labelled`, KTO's), as read_pairs reads pairs."""
    return read_with(path, lambda raw, number: parse_unpaired(raw, number, labelled=labelled), skip_bad=skip_bad)


def read_pairs(path: Path, *, skip_bad: bool = False) -> tuple[list[Pair], list[str]]:
    """The file's pairs, and (with `skip_bad`) the problems of the lines left out; without it, the first
    problem is a PairError naming the line."""
    return read_with(path, parse_pair, skip_bad=skip_bad)


def read_with(path: Path, parse: Any, *, skip_bad: bool) -> tuple[list[Any], list[str]]:
    """Each non-blank line through `parse(raw, number)`; a PairError names the file (or, with `skip_bad`, the
    line is listed and left out)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmcliError(f"cannot read the pairs: {exc}", path=path) from None
    pairs, skipped = [], []
    for number, raw in enumerate(split_lines(text), 1):
        if not raw.strip():
            continue
        try:
            pairs.append(parse(raw, number))
        except PairError as exc:
            if not skip_bad:
                raise PairError(exc.message, path=path) from None
            skipped.append(exc.message)
    if not pairs:
        raise LlmcliError("no preference data in the file", path=path)
    return pairs, skipped


def parse_pair(raw: str, number: int) -> Pair:
    where = f"line {number}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PairError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise PairError(f"{where}: expected a JSON object with chosen and rejected")
    for key in ("chosen", "rejected"):
        if key not in value:
            raise PairError(f"{where}: missing field '{key}'")
    chosen, rejected = value["chosen"], value["rejected"]
    prompt = value.get("prompt")
    if prompt is None:
        prompt, chosen, rejected = extract_prompt(chosen, rejected)
    kinds = {_kind(prompt, f"{where}: prompt", allow_empty=True), _kind(chosen, f"{where}: chosen"),
             _kind(rejected, f"{where}: rejected")}  # fmt: skip
    if len(kinds) > 1:
        raise PairError(f"{where}: prompt, chosen and rejected must all be strings or all lists of messages")
    if chosen == rejected:
        raise PairError(f"{where}: chosen equals rejected")
    return Pair(number, prompt, chosen, rejected)


def _kind(value: Any, where: str, *, allow_empty: bool = False) -> str:
    if isinstance(value, str):
        if not value and not allow_empty:
            raise PairError(f"{where} is empty")
        return "text"
    if isinstance(value, list):
        if not value and not allow_empty:
            raise PairError(f"{where} is empty")
        for message in value:
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                    and isinstance(message.get("content"), str)):  # fmt: skip
                raise PairError(f"{where}: each message needs a role and a string content")
        if not allow_empty and not any(m["content"] for m in value):
            raise PairError(f"{where} is empty")
        return "messages"
    raise PairError(f"{where} must be a string or a list of messages")


def extract_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """TRL's extract_prompt: the longest shared start is the prompt."""
    if not isinstance(chosen, str | list) or type(chosen) is not type(rejected):
        return None, chosen, rejected  # _kind names the problem
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            # The space before the split stays with the completions; at 0 there is none (TRL reads chosen[-1]).
            if idx > 0 and chosen[idx - 1] == " ":
                idx -= 1
            break
    return chosen[:idx], chosen[idx:], rejected[idx:]
