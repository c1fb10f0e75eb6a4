"""The client side of `--server`: llmcli's own endpoints over HTTP or a Unix socket, with no torch and no
transformers in the process (its start-up is that of `--help`).

A server is named by a URL (http://host:port), by 'unix:PATH', or by 'local': the per-user socket that
`llmcli serve --local` listens on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from llmcli.errors import LlmcliError, UsageError
from llmcli.lines import iter_lines

PREFIX = "/llmcli/v1/"


def local_socket() -> str:
    """The per-user socket of `llmcli serve --local`, in the cache home (the folder is the user's own)."""
    from llmcli.modelfs.default_model import cache_home

    return str(cache_home() / "serve.sock")


def socket_path(server: str) -> str | None:
    """The Unix socket a --server value names, or None for an HTTP URL."""
    if server == "local":
        return local_socket()
    if server.startswith("unix:"):
        return server.removeprefix("unix:").removeprefix("//") or local_socket()
    if not server.startswith(("http://", "https://")):
        raise UsageError(f"--server {server}: expected http://HOST:PORT, unix:PATH or local")
    return None


def _client(uds: str | None, connections: int = 1) -> Any:
    import httpx

    transport = httpx.HTTPTransport(uds=uds) if uds else None
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(600.0, connect=10.0)
    return httpx.Client(timeout=timeout, headers=_headers(), transport=transport, limits=limits)


_POOLS: dict[str, Any] = {}


@contextmanager
def pooled(server: str, connections: int) -> Iterator[None]:
    """While open, every request to `server` from this process shares one client of `connections`
    connections (a batch job's workers), instead of one client per request."""
    with _client(socket_path(server), connections) as http:
        _POOLS[server] = http
        try:
            yield
        finally:
            del _POOLS[server]


def _headers() -> dict[str, str]:
    key = os.environ.get("LLMCLI_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


@contextmanager
def session(server: str) -> Iterator[tuple[Any, str]]:
    """An httpx client for the server and the base URL its requests go to; transport errors become one line."""
    import httpx

    uds = socket_path(server)
    base = "http://localhost" if uds else server.rstrip("/")
    try:
        if server in _POOLS:  # a batch job: one connection pool for all its requests
            yield _POOLS[server], base
            return
        with _client(uds) as http:
            yield http, base
    except httpx.TransportError as exc:
        error = LlmcliError(
            f"cannot reach the server: {type(exc).__name__}", path=uds or server, hint="is `llmcli serve` running?"
        )
        error.retryable = True
        raise error from None


_ENGINES: dict[str, Any] = {}
RETRYABLE = {429, 502, 503}  # busy or restarting: a batch job tries again later


def _error(server: str, status: int, text: str, headers: Any = None) -> LlmcliError:
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text.strip()[:200] or f"HTTP {status}"
    if status == 400:
        return UsageError(f"the server refused the request: {message}")
    error = LlmcliError(f"HTTP {status}: {message}", path=server)
    error.retryable = status in RETRYABLE
    after = (headers or {}).get("retry-after", "")
    error.retry_after = float(after) if after.replace(".", "", 1).isdigit() else None
    return error


@contextmanager
def engine_session(server: str) -> Iterator[tuple[Any, str, Any]]:
    """`session()` plus the engine that answers there (foreign.detect)."""
    from llmcli.foreign.detect import detect

    with session(server) as (http, base):
        if server not in _ENGINES:  # a batch job asks once, not once per prompt
            engine = detect(http, base)
            if engine.kind != "llmcli":
                from llmcli.foreign.memory import recall

                engine.ignores = recall(server, engine)
            _ENGINES[server] = engine
        yield http, base, _ENGINES[server]


def _foreign(http: Any, base: str, server: str, engine: Any) -> Any:
    from llmcli.foreign.openai import Remote

    return Remote(http, base, server, engine, lambda status, text, headers=None: _error(server, status, text, headers))


def call(server: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request to llmcli's endpoint `endpoint` (next-token, score, tokenize), or its equivalent on
    another engine; the JSON record the command prints. score's `save_ref` (a Path) and `k` stay here: the
    reference file is written by this process, from another engine's top log-probabilities."""
    with engine_session(server) as (http, base, engine):
        if engine.kind != "llmcli":
            return _call_foreign(_foreign(http, base, server, engine), endpoint, body)
        if body.get("save_ref") is not None:
            raise UsageError("--save-ref over llmcli serve: run `score --save-ref` here, on the same model")
        body = {k: v for k, v in body.items() if k not in ("save_ref", "k")}
        response = http.post(base + PREFIX + endpoint, json=body)
        if response.status_code != 200:
            raise _error(server, response.status_code, response.text, response.headers)
        return response.json()


def _call_foreign(remote: Any, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    from llmcli.foreign import openai

    if endpoint == "score":
        if body.get("window") or body.get("stride") or body.get("save_ref"):
            from llmcli.foreign.windows import windowed_score

            openai.needs_vllm(remote, "score")
            model = body["model"] or remote.engine.models[0]
            return windowed_score(remote, model, body["text"], window=body.get("window"), stride=body.get("stride"),
                                  save_ref=body.get("save_ref"), k=body.get("k") or 20)  # fmt: skip
        if body.get("token_ids") is not None:
            return openai.score(remote, body["model"] or "", body["token_ids"])
        return openai.score(remote, body["model"] or "", body["text"])
    if endpoint == "next-token":
        if body.get("flags"):
            flag = next(iter(body["flags"])).replace("_", "-")
            raise UsageError(
                f"--{flag}: next-token's filters need the whole distribution, and {remote.engine.label} "
                "returns only the top log-probabilities"
            )
        options = {k: body.get(k) for k in ("top", "chat", "system")}
        return openai.next_token(remote, body["model"] or "", body["prompt"], **options)
    raise openai.refuse(endpoint, remote)


def get(server: str, path: str, *, needs: str) -> dict[str, Any]:
    """GET one of llmcli serve's own endpoints; `needs` names the command, refused (exit 2) in front of
    another engine."""
    with engine_session(server) as (http, base, engine):
        if engine.kind != "llmcli":
            raise UsageError(f"{needs} needs llmcli serve, and {engine.label} answers at {server}")
        response = http.get(base + path)
        if response.status_code != 200:
            raise _error(server, response.status_code, response.text, response.headers)
        return response.json()


def preview(server: str, body: dict[str, Any], *, stream: bool) -> Any:
    """What --show-config --server prints: the exact request body, prompt included, as generate would send it
    (`stream`: its text streamed to the terminal); one body per prompt on another engine."""
    from llmcli.foreign.requests import generate_request, prompts_of

    with engine_session(server) as (_http, _base, engine):
        if engine.kind == "llmcli":
            return {**body, "stream": stream}
        requests = []
        for prompt in prompts_of(body):
            request = generate_request(engine, body, prompt, body.get("messages"))[1]
            if stream and int(request.get("n") or 1) == 1:  # as foreign.openai streams it
                request |= {"stream": True, "stream_options": {"include_usage": True}}
            requests.append(request)
        return requests[0] if len(requests) == 1 else requests


def generate(server: str, body: dict[str, Any], *, on_text: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Yields each prompt's `generate --json` object; with `on_text`, streamed text is handed over as it comes."""
    payload = {**body, "stream": on_text is not None}
    with engine_session(server) as (http, base, engine):
        if engine.kind != "llmcli":
            from llmcli.foreign import openai

            yield from openai.generate(_foreign(http, base, server, engine), body, on_text)
            return
        with http.stream("POST", base + PREFIX + "generate", json=payload) as response:
            if response.status_code != 200:
                raise _error(server, response.status_code, response.read().decode("utf-8", "replace"), response.headers)
            lines = iter_lines(response.iter_text())
            yield from _streamed(lines, on_text) if on_text is not None else _ndjson(lines)


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
