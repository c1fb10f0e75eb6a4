"""The client side of `--server URL`: llmcli's own generate endpoint over HTTP, with no torch and no
transformers in the process (its start-up is that of `--help`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from llmcli.errors import LlmcliError, UsageError

ENDPOINT = "/llmcli/v1/generate"


def _headers() -> dict[str, str]:
    key = os.environ.get("LLMCLI_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _error(url: str, status: int, text: str) -> LlmcliError:
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text.strip()[:200] or f"HTTP {status}"
    if status == 400:
        return UsageError(f"the server refused the request: {message}")
    return LlmcliError(f"HTTP {status}: {message}", path=url)


def generate(url: str, body: dict[str, Any], *, on_text: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Yields each prompt's `generate --json` object; with `on_text`, streamed text is handed over as it comes."""
    import httpx

    target = url.rstrip("/") + ENDPOINT
    payload = {**body, "stream": on_text is not None}
    try:
        with httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0), headers=_headers()) as http:
            with http.stream("POST", target, json=payload) as response:
                if response.status_code != 200:
                    raise _error(url, response.status_code, response.read().decode("utf-8", "replace"))
                lines = response.iter_lines()
                yield from _streamed(lines, on_text) if on_text is not None else _ndjson(lines)
    except httpx.TransportError as exc:
        raise LlmcliError(
            f"cannot reach the server: {type(exc).__name__}", path=url, hint="is `llmcli serve` running?"
        ) from None


def _ndjson(lines: Iterator[str]) -> Iterator[dict]:
    for line in lines:
        if line.strip():
            yield json.loads(line)


def _streamed(lines: Iterator[str], on_text: Callable[[str], None]) -> Iterator[dict]:
    """Server-sent events: {"text": ...} pieces, then {"result": ...} objects."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        event = json.loads(line[5:].strip())
        if "text" in event:
            on_text(event["text"])
        elif "result" in event:
            yield event["result"]
