"""A generation request's way through serve, between HTTP and the engine: the key and body checked, the
model found, the request admitted to the queue, its plan checked as `generate` checks flags, its call started
on the step scheduler, and its events streamed or collected until the slot is released.

The engine is imported inside the methods only (no torch at import); the app (server.app) routes to here.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmcli.errors import LlmcliError, UsageError
from llmcli.server.answers import usage_chunk
from llmcli.server.api_error import ApiError
from llmcli.server.chat_prompt import chat_ids
from llmcli.server.choice_stream import ChoiceStream
from llmcli.server.failures import Failures
from llmcli.server.fanout import Fanout
from llmcli.server.grammars import Grammars
from llmcli.server.models import Served
from llmcli.server.protocol import Job, usage_error


@dataclass
class ServeSettings:
    api_key: str | None = None
    max_tokens: int = 2048  # the cap on any request's max_tokens
    max_body_bytes: int = 1024 * 1024
    queue_size: int = 64  # requests running or waiting; beyond it 503 with Retry-After
    timeout_seconds: float = 300.0  # per request
    base_kwargs: dict[str, Any] | None = None  # e.g. --compile's static cache, under every request's flags
    batch_invariant: bool = False  # rows share a batch only where outputs equal a solo run (float32 on CPU)
    max_batch: int | None = None  # a cap on the rows of a batch (None: bounded by the KV cache's memory)
    kv_budget_bytes: int | None = None  # the KV cache a model's batch may hold (None: half the free memory)
    keep_alive_seconds: float | None = None  # unload a model idle this long (None: never)
    plain_step: bool = False  # --no-compile: never a kept compiled decoding step (engine.step)


class Server:
    def __init__(self, models: dict[str, Served], settings: ServeSettings):
        from llmcli.engine.batch.scheduler import Scheduler, SchedulerSettings

        self.models, self.settings = models, settings
        self.in_flight = 0
        self.scheduler = Scheduler(
            SchedulerSettings(
                invariant=settings.batch_invariant,
                max_rows=settings.max_batch,
                kv_budget_bytes=settings.kv_budget_bytes,
                plain_step=settings.plain_step,
            )
        )
        self.grammars = Grammars()
        self.started = time.monotonic()
        self.failures = Failures()

    # ------------------------------------------------------------------ plumbing

    def check_key(self, request: Request) -> None:
        if self.settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {self.settings.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)", kind="authentication_error")

    async def body(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            raise ApiError(413, f"the request body exceeds {self.settings.max_body_bytes} bytes")
        raw = b""
        async for piece in request.stream():
            raw += piece
            if len(raw) > self.settings.max_body_bytes:
                raise ApiError(413, f"the request body exceeds {self.settings.max_body_bytes} bytes")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from None

    def model(self, name: str) -> Served:
        if not name and len(self.models) == 1:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise ApiError(404, f"the model '{name}' is not served here", param="model", kind="not_found_error")
        return self.models[name]

    def plan(self, served: Served, job: Job) -> Any:
        """The generation plan, checked exactly as `generate` checks its flags."""
        from llmcli.genargs import DecodingFlags, build_generate_kwargs, checked_seed
        from llmcli.plan import GenerationPlan, LoadSpec, check_combinations

        try:
            kwargs = {
                **(self.settings.base_kwargs or {}),
                **build_generate_kwargs(DecodingFlags(**job.flags, extra=job.extra)),
            }
            check_combinations(spec=LoadSpec(), kwargs=kwargs, logprobs=job.logprobs, constraint=job.constraint)
            seed = checked_seed(served.defaults, kwargs, job.seed)
        except UsageError as exc:
            raise usage_error(exc) from None
        return GenerationPlan(kwargs=kwargs, seed=seed, logprobs=job.logprobs, plain_step=self.settings.plain_step)

    def admit(self) -> None:
        if self.in_flight >= self.settings.queue_size:
            raise ApiError(503, "the server is busy: its queue is full", kind="server_busy")
        self.in_flight += 1

    async def unload_idle(self) -> None:
        """--keep-alive: every so often, models idle past it are unloaded while no request is in flight."""
        every = min(1.0, self.settings.keep_alive_seconds / 4)
        while True:
            await anyio.sleep(every)
            if self.in_flight == 0:  # checked and acted on in the event loop, where requests are admitted
                for served in self.models.values():
                    served.release_if_idle()

    def status(self) -> dict[str, Any]:
        """What `llmcli ps` shows."""
        return {
            "models": [m.status() for m in self.models.values()],
            "in_flight": self.in_flight,
            "queue_size": self.settings.queue_size,
            "max_batch": self.settings.max_batch,
            "batch_invariant": self.settings.batch_invariant,
            "rows_running": self.scheduler.rows(),
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "failed_requests": self.failures.count,
        }

    async def off_loop(self, work: Any) -> Any:
        """Tokenizer work, off the event loop."""
        return await anyio.to_thread.run_sync(work)

    async def on_engine(self, work: Any) -> Any:
        """A forward pass (next-token, score): in the queue, on the engine thread, between generate() calls."""
        from llmcli.engine.load.worker import on_engine

        self.admit()
        try:
            return await anyio.to_thread.run_sync(on_engine, work)
        finally:
            self.in_flight -= 1

    # ------------------------------------------------------------------ generation

    async def start(self, served: Served, job: Job) -> Any:
        """The GenerationStream for a job (prompt encoding and checks run off the event loop)."""
        from llmcli.engine.generate.calls import encode
        from llmcli.engine.generate.generation import stream_generate

        plan = self.plan(served, job)

        def begin() -> Any:
            loaded = served.acquire()
            tokenizer = loaded.tokenizer
            compiled = self.grammars.get(loaded, job.constraint, plan.kwargs) if job.constraint else None
            planned = replace(plan, constraint=compiled)
            if job.chat:
                job.tool_parser = served.tool_parser
                encoded = [chat_ids(served, tokenizer, job)]
                prompts = [job.messages[-1]["content"]]
            else:
                encoded = [encode(tokenizer, p, system=job.system, raw=job.raw) for p in job.prompts]
                prompts = job.prompts
            options = {"encoded": encoded, "stream_text": job.stream, "scheduler": self.scheduler}
            if job.stream and job.logprobs is not None:
                options["token_logprobs"] = job.logprobs
            choices = planned.kwargs.get("num_return_sequences", 1)
            if job.stream and choices > 1:  # one row per choice, merged
                return Fanout([stream_generate(loaded, prompts, one, **options) for one in _one_each(planned, choices)])
            return stream_generate(loaded, prompts, planned, **options)

        try:
            return await anyio.to_thread.run_sync(begin)
        except UsageError as exc:
            raise usage_error(exc) from None
        except LlmcliError as exc:
            raise ApiError(400, exc.message) from None

    async def events(self, stream: Any) -> AsyncIterator[Any]:
        iterator = iter(stream)
        while True:
            event = await anyio.to_thread.run_sync(next, iterator, None)
            if event is None:
                return
            yield event

    async def collect(self, request: Request, stream: Any) -> list[Any]:
        """The results, the call stopped early when the client goes away or the time limit passes."""
        from llmcli.engine.generate.generation import Finished

        state = {"timed_out": False}

        async def watch() -> None:
            deadline = time.monotonic() + self.settings.timeout_seconds
            while True:
                await anyio.sleep(0.2)
                late = time.monotonic() > deadline
                if late or await request.is_disconnected():
                    state["timed_out"] = late
                    stream.cancelled.set()
                    return

        results: list[Any] = []
        refused: UsageError | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            try:
                async for event in self.events(stream):
                    if isinstance(event, Finished):
                        results = event.results
            except UsageError as exc:  # settings generate() or a row's processors refused: the client's error
                refused = exc
            finally:
                group.cancel_scope.cancel()
        if refused is not None:  # raised out here: a task group would wrap it in an ExceptionGroup
            raise usage_error(refused)
        if state["timed_out"]:
            raise ApiError(504, f"the request ran past the server's time limit ({self.settings.timeout_seconds:g} s)")
        return results

    async def stream_openai(self, served: Served, job: Job, stream: Any) -> AsyncIterator[str]:
        """Server-sent events in OpenAI's shape, then [DONE]; a client that leaves stops the call. Each chunk
        carries its choice's index (n > 1 streams several, interleaved)."""
        try:
            choices = [ChoiceStream(job, served.name, index) for index in range(job.choices)]
            for choice in choices:
                for piece in choice.opening():
                    yield json.dumps(piece)
            async for index, event in self.tagged(stream):
                for piece in choices[index].on(event):
                    yield json.dumps(piece)
            if job.include_usage:
                results = [result for choice in choices for result in choice.results]
                yield json.dumps(usage_chunk(job, served.name, results))
            yield "[DONE]"
        finally:
            await self.release(stream)

    async def tagged(self, stream: Any) -> AsyncIterator[tuple[int, Any]]:
        """A stream's events with their choice index (always 0 but under a Fanout)."""
        async for event in self.events(stream):
            yield event if isinstance(stream, Fanout) else (0, event)

    async def stream_llmcli(self, served: Served, stream: Any) -> AsyncIterator[str]:
        """llmcli's stream: {"text": ...} events, then {"result": <generate --json object>} per prompt."""
        from llmcli.engine.generate.generation import Finished, TextDelta

        try:
            async for event in self.events(stream):
                if isinstance(event, TextDelta) and event.text:
                    yield json.dumps({"text": event.text}, ensure_ascii=False)
                elif isinstance(event, Finished):
                    for result in event.results:
                        yield json.dumps({"result": result.as_json(served.info, served.replay())}, ensure_ascii=False)
        finally:
            await self.release(stream)

    async def begin(self, job: Job) -> tuple[Served, Any]:
        """The job's model, a place in the queue, and its call started (the place given back if it fails)."""
        served = self.model(job.model)
        self.admit()
        try:
            return served, await self.start(served, job)
        except BaseException:
            self.in_flight -= 1
            raise

    async def respond(self, request: Request, parse: Any, reply: Any) -> Response:
        """A generation request: parsed, admitted, run; a stream of events or one answer (`reply` shapes
        OpenAI's; None: llmcli's NDJSON of generate --json objects)."""
        job = parse(await self.body(request))
        served, stream = await self.begin(job)
        if job.stream:
            from sse_starlette.sse import EventSourceResponse
            from starlette.background import BackgroundTask

            body = self.stream_openai(served, job, stream) if reply else self.stream_llmcli(served, stream)
            body = self.logged(body, request, lambda message: json.dumps(ApiError(500, message).body()))
            return EventSourceResponse(body, background=BackgroundTask(self.release, stream))
        try:
            results = await self.collect(request, stream)
        finally:
            await self.release(stream)
        if reply is None:
            lines = [json.dumps(r.as_json(served.info, served.replay()), ensure_ascii=False) for r in results]
            return Response("\n".join(lines) + "\n", media_type="application/x-ndjson")
        return JSONResponse(reply(job, results, served.name))

    async def logged(self, events: AsyncIterator[Any], request: Request, error: Any) -> AsyncIterator[Any]:
        """A stream's events; an unexpected error in it is logged, counted and ends the stream with the event
        `error(message)` makes (the status line has gone out already)."""
        try:
            async for event in events:
                yield event
        except Exception as exc:  # noqa: BLE001
            yield error(self.failures.log(exc, request, streaming=True)[1])

    def model_list(self) -> dict[str, Any]:
        models = self.models.values()
        data = [{"id": m.name, "object": "model", "created": m.created, "owned_by": "llmcli"} for m in models]
        return {"object": "list", "data": data}

    async def release(self, stream: Any) -> None:
        """The call is over (done, stopped, or its client gone): wait for the engine, free the slot. Once per
        stream: a stream's body frees it when it ends, its response's background task when the body never ran."""
        if getattr(stream, "released", False):
            return
        stream.released = True
        try:
            # Shielded: a stream's body is released while its task is being cancelled (the client left), and
            # an await there would be cancelled too, before the slot is freed.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(stream.stop)
        finally:
            self.in_flight -= 1


def _one_each(plan: Any, choices: int) -> list[Any]:
    """n single-choice plans: choice i under seed + i."""
    kwargs = {k: v for k, v in plan.kwargs.items() if k != "num_return_sequences"}
    seeds = [None if plan.seed is None else plan.seed + i for i in range(choices)]
    return [replace(plan, kwargs=kwargs, seed=seed) for seed in seeds]
