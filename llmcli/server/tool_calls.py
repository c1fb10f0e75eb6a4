"""Tools as OpenAI clients send them (`tools`, `tool_choice`, `parallel_tool_calls`), and the calls read back
out of a model's text in its family's format.

`auto` lets the model choose and parses what it wrote: a call that does not parse, or names a function the
request did not offer, comes back as text, never as an error. `required` and a named function constrain the
decoding (xgrammar) to one well-formed call: the generation prompt ends with the format's opening (Hermes'
`<tool_call>`), and the output is a JSON object `{"name", "arguments"}` whose arguments validate against the
function's schema. `none` renders no tools and reads no calls.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from llmcli.server.api_error import ApiError
from llmcli.server.tool_formats import FORMATS, calls_in_text

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CHOICES = ("auto", "none", "required")


@dataclass
class ToolRequest:
    tools: list[dict[str, Any]]  # OpenAI's tool objects, as the chat template takes them
    choice: str = "auto"  # auto | none | required | function
    name: str | None = None  # tool_choice's function
    parallel: bool = True
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)  # function name → its parameters' schema

    @property
    def forced(self) -> bool:
        return self.choice in ("required", "function")

    def rendered(self) -> list[dict[str, Any]] | None:
        """The tools the template shows the model (none under `none`)."""
        return None if self.choice == "none" else self.tools

    def call_schema(self) -> str:
        """The JSON schema of one call: of the named function, or of any offered one under `required`."""
        names = [self.name] if self.choice == "function" else list(self.schemas)
        one = [
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": self.schemas[name]},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for name in names
        ]
        return json.dumps(one[0] if len(one) == 1 else {"anyOf": one})


def parse_tools(body: dict[str, Any]) -> ToolRequest | None:
    """The request's tools, tool_choice and parallel_tool_calls, checked; None without tools."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise ApiError(400, "'parallel_tool_calls' must be true or false", param="parallel_tool_calls")
    if tools is None:
        if choice not in (None, "none"):
            raise ApiError(400, "'tool_choice' needs 'tools'", param="tool_choice")
        return None
    if not isinstance(tools, list) or not tools:
        raise ApiError(400, "'tools' must be a non-empty list of functions", param="tools")
    request = ToolRequest(tools=[_tool(tool, i) for i, tool in enumerate(tools)], parallel=parallel)
    request.schemas = {t["function"]["name"]: t["function"].get("parameters") or {"type": "object"} for t in tools}
    if len(request.schemas) < len(tools):
        raise ApiError(400, "'tools' names a function twice", param="tools")
    _choose(request, choice)
    return request


def _tool(tool: Any, index: int) -> dict[str, Any]:
    where = f"tools[{index}]"
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
        raise ApiError(400, f'{where}: expected {{"type": "function", "function": {{...}}}}', param="tools")
    name = function.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ApiError(400, f"{where}.function.name must be 1-64 letters, digits, _ or -", param="tools")
    schema = function.get("parameters")
    if schema is not None:
        from jsonschema import Draft202012Validator, SchemaError

        try:
            if not isinstance(schema, dict):
                raise SchemaError(f"{schema!r} is not an object")
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ApiError(
                400, f"{where}.function.parameters is not a JSON schema: {exc.message}", param="tools"
            ) from None
    return {"type": "function", "function": {k: v for k, v in function.items() if k != "strict"}}


def _choose(request: ToolRequest, choice: Any) -> None:
    if choice is None or choice in CHOICES:
        request.choice = choice or "auto"
        return
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise ApiError(400, "'tool_choice' must be auto, none, required or "
                       '{"type": "function", "function": {"name": ...}}', param="tool_choice")  # fmt: skip
    if name not in request.schemas:
        raise ApiError(400, f"tool_choice names '{name}', which is not in 'tools'", param="tool_choice")
    request.choice, request.name = "function", name


# ---------------------------------------------------------------------------------------- reading calls back


def read_calls(text: str, request: ToolRequest, parser: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The answer's text and the tool calls in it, as OpenAI returns them. A forced answer is the call's JSON
    itself (its opening was in the prompt); under auto a malformed call leaves the whole text as content."""
    if request.choice == "none":
        return text, []
    if request.forced:
        calls = calls_in_text(text)
        found = None if calls is None else (None, calls)
    else:
        found = FORMATS[parser].read(text)
    if found is None:
        return text, []
    content, calls = found
    if not calls or any(c["name"] not in request.schemas for c in calls):
        return text, []
    if not request.parallel:
        calls = calls[:1]
    return content, [_openai_call(c) for c in calls]


def _openai_call(call: dict[str, Any]) -> dict[str, Any]:
    arguments = call["arguments"]
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": call["name"], "arguments": text}}  # fmt: skip


# ---------------------------------------------------------------------------------------- streaming


class ContentFilter:
    """A stream's text deltas with the tool calls held back: text goes out until a call may have begun (the
    format's opening, or a prefix of it at the end of what arrived), the rest waits for the whole answer."""

    def __init__(self, request: ToolRequest, parser: str):
        self.opening = FORMATS[parser].opening
        self.active = request.choice != "none"
        self.forced = request.forced
        self.held = ""
        self.sent = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """What of `text` may go out as content now."""
        if not self.active:
            return text
        self.held += text
        if self.forced or self.stopped:
            return ""
        if self.opening == "{":  # Llama 3's JSON calls: a call is the whole answer
            head = (self.sent + self.held).lstrip()
            if not head:
                return ""
            if head.startswith(("{", "<|python_tag|>")):
                self.stopped = True
                return ""
            out, self.held = self.held, ""
        else:
            at = self.held.find(self.opening)
            cut = at if at != -1 else len(self.held) - _partial_suffix(self.held, self.opening)
            out, self.held = self.held[:cut], self.held[cut:]
            self.stopped = at != -1
        self.sent += out
        return out

    def rest(self, content: str | None, *, has_calls: bool) -> str:
        """At the end: the text held back when it held no call after all; with calls, what of the answer's
        `content` (the text around them) has not gone out yet."""
        if not has_calls:
            return self.held
        sent = self.sent.lstrip()
        return content[len(sent) :] if content and content.startswith(sent) else ""


def _partial_suffix(text: str, opening: str) -> int:
    """How many characters at the end of `text` could be the start of `opening`."""
    for size in range(min(len(opening) - 1, len(text)), 0, -1):
        if opening.startswith(text[-size:]):
            return size
    return 0
