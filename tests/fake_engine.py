"""A minimal OpenAI-compatible server for tests: it ignores `n`, `stop` and `max_tokens` the way real servers
do (one choice, a fixed 30-token text that runs past any stop string), and can present itself as
llama-cpp-python's server. It records every request body it receives."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

TEXT = "one two three. four five six\nseven eight nine ten eleven twelve. thirteen fourteen fifteen"
TOKENS = 30


@dataclass
class Fake:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == path]


def _answer(path: str, body: dict[str, Any]) -> dict[str, Any]:
    chat = path.endswith("chat/completions")
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": TEXT}
    else:
        choice["text"] = TEXT
    usage = {"prompt_tokens": 4, "completion_tokens": TOKENS, "total_tokens": TOKENS + 4}
    return {"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 0,
            "model": body.get("model") or "fake-model", "choices": [choice], "usage": usage}  # fmt: skip


def _stream(body: dict[str, Any]) -> list[str]:
    events = []
    for piece in TEXT.split(" "):
        delta = {"index": 0, "delta": {"content": piece + " "}, "finish_reason": None}
        events.append(json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [delta]}))
    done = {"index": 0, "delta": {}, "finish_reason": "stop"}
    usage = {"prompt_tokens": 4, "completion_tokens": TOKENS, "total_tokens": TOKENS + 4}
    events.append(json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [done], "usage": usage}))
    return events


def build_app(fake: Fake, *, llama_cpp: bool) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def models(_request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "me"}]})

    async def openapi(_request: Request) -> Response:
        if not llama_cpp:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return JSONResponse({"openapi": "3.1.0", "info": {"title": "🦙 llama.cpp Python API", "version": "0.3.36"}})

    async def generate(request: Request) -> Response:
        body = await request.json()
        fake.requests.append({"path": request.url.path, "body": body})
        if body.get("stream"):
            lines = "".join(f"data: {event}\n\n" for event in _stream(body)) + "data: [DONE]\n\n"
            return Response(lines, media_type="text/event-stream")
        return JSONResponse(_answer(request.url.path, body))

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/completions", generate, methods=["POST"]),
        Route("/v1/chat/completions", generate, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(*, llama_cpp: bool = True):
    """The fake on a free loopback port, in a thread, for the length of the block."""
    import uvicorn

    port = _free_port()
    fake = Fake(f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(build_app(fake, llama_cpp=llama_cpp), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
