"""OpenAI's Responses API (`POST /v1/responses`) as the `openai` client's `responses.create` uses it.

A request becomes a chat completions request and goes the same way (the chat template, tools, constraints,
the batch): `input` (a string, or message and function-call items), `instructions` (a system message for
this request only), `max_output_tokens`, `temperature`, `top_p`, `seed`, function `tools` and `tool_choice`,
`parallel_tool_calls`, `text.format` (json_schema or json_object), `stream`, and `previous_response_id`. The
answer is a `response` object whose output holds a message and function_call items.

previous_response_id: each stored response keeps its conversation (input and output, not its instructions), in
this server's memory only, for the last STORE_LIMIT responses created (first in, first out: continuing a
conversation stores its new response and does not keep the old one longer); an older or unknown id is a 404
naming it. `store: false` keeps a response out of it.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from llmcli.server.answers import assistant_message
from llmcli.server.api_error import ApiError

STORE_LIMIT = 256
ACCEPTED = {"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "seed", "tools",
            "tool_choice", "parallel_tool_calls", "text", "stream", "previous_response_id", "store", "metadata",
            "user"}  # fmt: skip


@dataclass
class Turn:
    """A Responses request as the chat request it runs as, and what the answer repeats of it."""

    chat: dict[str, Any]  # a /v1/chat/completions body
    conversation: list[dict[str, Any]]  # earlier turns and this input, as chat messages (no instructions)
    echo: dict[str, Any]  # the request's settings, as the response object repeats them
    store: bool = True
    id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


class Store:
    """The last STORE_LIMIT responses' conversations, for previous_response_id, oldest dropped first."""

    def __init__(self) -> None:
        self.kept: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    def get(self, response_id: str) -> list[dict[str, Any]]:
        if response_id not in self.kept:
            raise ApiError(404, f"previous_response_id '{response_id}' is not held by this server (it keeps the last "
                           f"{STORE_LIMIT} responses, in memory)", param="previous_response_id",
                           kind="not_found_error")  # fmt: skip
        return self.kept[response_id]

    def put(self, response_id: str, conversation: list[dict[str, Any]]) -> None:
        self.kept[response_id] = conversation
        while len(self.kept) > STORE_LIMIT:
            self.kept.popitem(last=False)


def parse_responses(body: Any, store: Store) -> Turn:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - ACCEPTED)
    if unknown:
        raise ApiError(400, f"'{unknown[0]}' is not supported by this server's /v1/responses", param=unknown[0])
    earlier = store.get(body["previous_response_id"]) if body.get("previous_response_id") else []
    conversation = [*earlier, *_input_messages(body.get("input"))]
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise ApiError(400, "'instructions' must be a string", param="instructions")
    messages = ([{"role": "system", "content": instructions}] if instructions else []) + conversation
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "stream": body.get("stream", False)}
    renamed = {"max_output_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "seed": "seed",
               "parallel_tool_calls": "parallel_tool_calls"}  # fmt: skip
    chat |= {new: body[old] for old, new in renamed.items() if body.get(old) is not None}
    if body.get("tools") is not None:
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    response_format = _text_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    settings = ("instructions", "max_output_tokens", "temperature", "top_p", "previous_response_id", "metadata")
    echo = {k: body.get(k) for k in settings} | {
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice", "auto"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "text": body.get("text") or {"format": {"type": "text"}},
    }
    return Turn(chat, conversation, echo, store=body.get("store", True) is not False)


def _input_messages(value: Any) -> list[dict[str, Any]]:
    """`input` as chat messages: a string is one user message; items are messages, the model's function
    calls (an assistant message's tool_calls) and their outputs (tool messages)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'input' must be a string or a non-empty list of items", param="input")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message" and "role" in item:
            messages.append({"role": item["role"], "content": item.get("content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}  # fmt: skip
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
        else:
            raise ApiError(400, f"input[{index}]: expected a message, function_call or function_call_output item",
                           param="input")  # fmt: skip
    return messages


def _tools(tools: Any) -> Any:
    """The Responses API's flat function tools as chat completions' nested ones."""
    if not isinstance(tools, list):
        return tools  # parse_tools names the problem
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise ApiError(400, f"tools[{index}]: only function tools are served, not {kind!r}", param="tools")
        function = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _text_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    shape = text.get("format") if isinstance(text, dict) else None
    kind = shape.get("type") if isinstance(shape, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(shape.get("schema"), dict):
        return {"type": "json_schema", "json_schema": {"name": shape.get("name", "output"), "schema": shape["schema"]}}
    raise ApiError(400, "text.format: expected {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                   "{\"type\": \"json_schema\", \"schema\": {...}}", param="text")  # fmt: skip


# ---------------------------------------------------------------------------------------- the answer


def output_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The assistant's chat message as Responses output items: its text as a message, each call as a
    function_call."""
    items = []
    if message.get("content"):
        items.append(text_item(message["content"], "completed"))
    for call in message.get("tool_calls") or []:
        items.append(call_item(call))
    return items


def text_item(text: str, status: str, item_id: str | None = None) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": item_id or f"msg_{uuid.uuid4().hex}", "status": status, "role": "assistant",
            "content": [part] if text or status == "completed" else []}  # fmt: skip


def call_item(call: dict[str, Any]) -> dict[str, Any]:
    function = call["function"]
    return {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call["id"],
            "name": function["name"], "arguments": function["arguments"], "status": "completed"}  # fmt: skip


def response_object(turn: Turn, model: str, *, output: list[dict[str, Any]], status: str,
                    usage: dict[str, int] | None) -> dict[str, Any]:  # fmt: skip
    body = {"id": turn.id, "object": "response", "created_at": turn.created, "model": model, "status": status,
            "output": output, "error": None, "incomplete_details": None, **turn.echo, "usage": None}  # fmt: skip
    if status == "incomplete":
        body["incomplete_details"] = {"reason": "max_output_tokens"}
    if usage is not None:
        body["usage"] = {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
                         "total_tokens": usage["total_tokens"],
                         "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                         "output_tokens_details": {"reasoning_tokens": 0}}  # fmt: skip
    return body


def finished(turn: Turn, store: Store, message: dict[str, Any]) -> None:
    """The turn's conversation, with the answer, kept for a later previous_response_id (unless `store: false`)."""
    if turn.store:
        store.put(turn.id, [*turn.conversation, message])


def answer_message(job: Any, results: list[Any]) -> dict[str, Any]:
    """The answer as the assistant's chat message; an empty one when the call produced no result, so that a
    later turn on this response still renders."""
    return assistant_message(job, results[0].outputs[0].text) if results else {"role": "assistant", "content": ""}
