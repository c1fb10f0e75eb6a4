"""What came back from another engine, checked against what was asked: the number of choices against `n`,
the tokens against `max_tokens`, the stop strings against the texts, the log-probabilities and token ids
asked for. A field the engine dropped in silence is a finding, never passed off as honoured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# request field → the llmcli flag that asked for it
FLAG_OF = {
    "n": "--num-return-sequences",
    "max_tokens": "--max-new-tokens",
    "stop": "--stop",
    "logprobs": "--logprobs",
    "return_token_ids": "token ids (--json)",
    "logit_bias": "--logit-bias",
}


@dataclass
class Finding:
    field: str
    evidence: str  # what came back, e.g. "returned 1 of 3 sequences"

    def message(self, label: str) -> str:
        return f"{label} {self.evidence}: it ignores {self.field} ({FLAG_OF[self.field]})"


def _stops(request: dict[str, Any]) -> list[str]:
    stop = request.get("stop")
    return [stop] if isinstance(stop, str) else list(stop or [])


def _text(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    return (message.get("content") or "") if message else choice.get("text") or ""


def _past_stop(text: str, stops: list[str]) -> str | None:
    """A stop string with text after it: the engine went on. One at the very end is allowed (some engines
    keep the stop string in the text)."""
    for stop in stops:
        at = text.find(stop)
        if at != -1 and at + len(stop) < len(text):
            return stop
    return None


def findings(request: dict[str, Any], answer: dict[str, Any]) -> list[Finding]:
    choices = answer.get("choices") or []
    found: list[Finding] = []
    asked = int(request.get("n") or 1)
    if len(choices) < asked:
        found.append(Finding("n", f"returned {len(choices)} of {asked} sequences"))
    limit = request.get("max_tokens")
    if limit is not None:
        used = (answer.get("usage") or {}).get("completion_tokens")
        most = max([len(c.get("token_ids") or []) for c in choices] + [0])
        if most > limit or used is not None and used > limit * max(len(choices), 1):
            found.append(Finding("max_tokens", f"returned {max(most, used or 0)} tokens for max_tokens {limit}"))
    stops = _stops(request)
    for choice in choices:
        stop = _past_stop(_text(choice), stops)
        if stop is not None:
            found.append(Finding("stop", f"returned a text that goes on past the stop string {stop!r}"))
            break
    banned = {int(token) for token, bias in (request.get("logit_bias") or {}).items() if bias <= -100}
    for choice in choices:
        chosen = banned.intersection(choice.get("token_ids") or [])
        if chosen:
            found.append(Finding("logit_bias", f"returned the token {min(chosen)}, which logit_bias -100 bans"))
            break
    if request.get("logprobs") and any(c.get("logprobs") is None for c in choices):
        found.append(Finding("logprobs", "returned no log-probabilities"))
    if request.get("return_token_ids") and any(c.get("token_ids") is None for c in choices):
        found.append(Finding("return_token_ids", "returned no token ids"))
    return found
