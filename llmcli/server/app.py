"""`llmcli serve`'s HTTP side on Starlette: the routes of the OpenAI-compatible API and llmcli's own endpoints.

Every request goes through the same generation pipeline as `llmcli generate` (engine.generate.generation), through
server.service. Errors are OpenAI's error JSON with no traceback and no filesystem path.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmcli.server.answers import chat_body, completion_body
from llmcli.server.api_error import ApiError
from llmcli.server.failures import REQUEST_ID
from llmcli.server.models import Served
from llmcli.server.protocol import Job, parse_llmcli, parse_openai
from llmcli.server.responses_api import Store
from llmcli.server.service import Server, ServeSettings

INSPECTION_ENDPOINTS = ("next-token", "score", "tokenize")  # llmcli's own, beside the OpenAI API


def build_app(models: dict[str, Served], settings: ServeSettings) -> Starlette:
    server = Server(models, settings)
    cap = settings.max_tokens

    def guard(work: Any) -> Any:
        async def handle(request: Request) -> Response:
            return await guarded(server, request, work)

        return handle

    def inspection(name: str) -> Any:
        async def work(request: Request) -> Response:
            from llmcli.server.inspection import answer

            return JSONResponse(await answer(server, name, await server.body(request)))

        return guard(work)

    async def completions(request: Request) -> Response:
        return await server.respond(request, lambda b: _raw(parse_openai(b, chat=False, cap=cap)), completion_body)

    async def chat_completions(request: Request) -> Response:
        return await server.respond(request, lambda b: parse_openai(b, chat=True, cap=cap), chat_body)

    async def llmcli_generate(request: Request) -> Response:
        return await server.respond(request, lambda b: parse_llmcli(b, cap=cap), None)

    stored = Store()

    async def responses(request: Request) -> Response:
        from llmcli.server.responses_endpoint import create_response

        return await create_response(server, request, stored, cap=cap)

    async def list_models(_request: Request) -> Response:
        return JSONResponse(server.model_list())

    async def ps(_request: Request) -> Response:
        return JSONResponse(server.status())

    async def load_model(request: Request) -> Response:
        from sse_starlette.sse import EventSourceResponse

        from llmcli.server.compat import load_model_events

        return EventSourceResponse(load_model_events(server, await server.body(request)))

    async def health(_request: Request) -> Response:  # unguarded: a load balancer's probe carries no key
        status = {"in_flight": server.in_flight, "queue_size": settings.queue_size}
        return JSONResponse({"status": "ok", "models": list(models), **status})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", guard(list_models), methods=["GET"]),
        Route("/v1/completions", guard(completions), methods=["POST"]),
        Route("/v1/chat/completions", guard(chat_completions), methods=["POST"]),
        Route("/v1/responses", guard(responses), methods=["POST"]),
        Route("/llmcli/v1/generate", guard(llmcli_generate), methods=["POST"]),
        Route("/llmcli/v1/ps", guard(ps), methods=["GET"]),
        Route("/load_model", guard(load_model), methods=["POST"]),  # transformers chat (server.compat)
        *(Route(f"/llmcli/v1/{name}", inspection(name), methods=["POST"]) for name in INSPECTION_ENDPOINTS),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Each request in flight holds a worker thread while it waits for its events (anyio's default is 40).
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, 2 * settings.queue_size + 8)
        async with anyio.create_task_group() as group:
            if settings.keep_alive_seconds is not None:
                group.start_soon(server.unload_idle)
            yield
            group.cancel_scope.cancel()

    return Starlette(routes=routes, lifespan=lifespan)


async def guarded(server: Server, request: Request, work: Any) -> Response:
    """The API key checked, then `work`; any error becomes OpenAI's error JSON (never a traceback or a path),
    an unexpected one logged on the server's stderr under the request's id."""
    try:
        server.check_key(request)
        return await work(request)
    except ApiError as exc:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
    except Exception as exc:  # noqa: BLE001
        rid, message = server.failures.log(exc, request)  # an id made only when something failed
        body = ApiError(500, message, kind="server_error").body()
        return JSONResponse(body, status_code=500, headers={REQUEST_ID: rid})


def _raw(job: Job) -> Job:
    """OpenAI's completions take the prompt as it is: no chat template."""
    job.raw = True
    return job
