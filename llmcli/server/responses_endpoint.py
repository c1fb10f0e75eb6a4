"""`POST /v1/responses`: a Responses request run as a chat request (server.responses_api), answered as one
`response` object or as the Responses API's stream of events: response.created, then per output item its
added / delta / done events (text as response.output_text.delta, a call's arguments as
response.function_call_arguments.delta), then response.completed with the whole response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmcli.server.answers import usage
from llmcli.server.protocol import parse_openai
from llmcli.server.responses_api import (
    Store,
    Turn,
    answer_message,
    call_item,
    finished,
    output_items,
    parse_responses,
    response_object,
    text_item,
)
from llmcli.server.tool_calls import ContentFilter


async def create_response(server: Any, request: Request, store: Store, *, cap: int) -> Response:
    turn = parse_responses(await server.body(request), store)
    job = parse_openai(turn.chat, chat=True, cap=cap)
    served, stream = await server.begin(job)
    if job.stream:
        from sse_starlette.sse import EventSourceResponse
        from starlette.background import BackgroundTask

        event = _Events()
        failed = lambda message: event("error", code="server_error", message=message, param=None)  # noqa: E731
        events = server.logged(_events(server, served, job, turn, store, stream, event), request, failed)
        return EventSourceResponse(events, background=BackgroundTask(server.release, stream))
    try:
        results = await server.collect(request, stream)
    finally:
        await server.release(stream)
    message = answer_message(job, results)
    finished(turn, store, message)
    status = _status(results, message)
    return JSONResponse(response_object(turn, served.name, output=output_items(message), status=status,
                                        usage=usage(results)))  # fmt: skip


def _status(results: list[Any], message: dict[str, Any]) -> str:
    cut = results and results[0].outputs[0].finish_reason == "length" and not message.get("tool_calls")
    return "incomplete" if cut else "completed"


class _Events:
    """Numbered server-sent events of one response."""

    def __init__(self) -> None:
        self.number = 0

    def __call__(self, kind: str, **fields: Any) -> dict[str, str]:
        self.number += 1
        payload = {"type": kind, "sequence_number": self.number, **fields}
        return {"event": kind, "data": json.dumps(payload, ensure_ascii=False)}


async def _events(server: Any, served: Any, job: Any, turn: Turn, store: Store, stream: Any,
                  event: _Events) -> AsyncIterator[Any]:  # fmt: skip
    from llmcli.engine.generate.generation import Finished, TextDelta

    yield event("response.created", response=response_object(turn, served.name, output=[], status="in_progress",
                                                              usage=None))  # fmt: skip
    held = ContentFilter(job.tools, job.tool_parser) if job.tools is not None else None
    text = _TextItem(event)
    try:
        async for step in server.events(stream):
            if isinstance(step, TextDelta) and step.text:
                for out in text.add(held.feed(step.text) if held is not None else step.text):
                    yield out
            elif isinstance(step, Finished):
                message = answer_message(job, step.results)
                calls = message.get("tool_calls") or []
                rest = held.rest(message.get("content"), has_calls=bool(calls)) if held is not None else ""
                for out in text.add(rest):
                    yield out
                for out in text.close():
                    yield out
                items = text.items()
                for call in calls:
                    item = call_item(call)
                    for out in _call_events(event, item, len(items)):
                        yield out
                    items.append(item)
                finished(turn, store, message)
                status = _status(step.results, message)
                whole = response_object(turn, served.name, output=items, status=status, usage=usage(step.results))
                # response.completed even when cut short (its status says incomplete): the openai client's
                # stream helper waits for that event alone.
                yield event("response.completed", response=whole)
    finally:
        await server.release(stream)


class _TextItem:
    """The answer's message item, opened at its first text and closed at the end."""

    def __init__(self, event: _Events):
        self.event, self.text, self.item = event, "", None

    def add(self, piece: str) -> list[dict[str, str]]:
        if not piece:
            return []
        out = []
        if self.item is None:
            self.item = text_item("", "in_progress")
            out.append(self.event("response.output_item.added", output_index=0, item=self.item))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(self.event("response.content_part.added", item_id=self.item["id"], output_index=0,
                                  content_index=0, part=part))  # fmt: skip
        self.text += piece
        out.append(self.event("response.output_text.delta", item_id=self.item["id"], output_index=0,
                              content_index=0, delta=piece, logprobs=[]))  # fmt: skip
        return out

    def close(self) -> list[dict[str, str]]:
        if self.item is None:
            return []
        done = text_item(self.text, "completed", self.item["id"])
        where = {"item_id": self.item["id"], "output_index": 0, "content_index": 0}
        return [
            self.event("response.output_text.done", **where, text=self.text, logprobs=[]),
            self.event("response.content_part.done", **where, part=done["content"][0]),
            self.event("response.output_item.done", output_index=0, item=done),
        ]

    def items(self) -> list[dict[str, Any]]:
        return [] if self.item is None else [text_item(self.text, "completed", self.item["id"])]


def _call_events(event: _Events, item: dict[str, Any], index: int) -> list[dict[str, str]]:
    opened = item | {"arguments": "", "status": "in_progress"}
    where = {"item_id": item["id"], "output_index": index}
    return [
        event("response.output_item.added", output_index=index, item=opened),
        event("response.function_call_arguments.delta", **where, delta=item["arguments"]),
        event("response.function_call_arguments.done", **where, arguments=item["arguments"]),
        event("response.output_item.done", output_index=index, item=item),
    ]
