"""Chat messages as OpenAI clients send them, made into what the model's chat template renders.

A message's content is a string or a list of content parts (what the `openai` client, LangChain and most
front-ends now send): text parts are joined in order with a newline, as vLLM joins them; an image, audio or
file part is refused by name, since the models served here read text only. The `developer` role (OpenAI's
newer name for instructions) is kept where the template knows it and rendered as `system` where it does not;
`name` travels to the template, which may use it. An assistant message may carry `tool_calls` (its content
then may be null), and a `tool` message answers one of them by `tool_call_id`; both reach the template as
transformers' chat templates take them (a call's arguments as an object, not OpenAI's JSON text).
"""

from __future__ import annotations

from typing import Any

from llmcli.server.api_error import ApiError

ROLES = ("system", "developer", "user", "assistant", "tool")
TEXT_PARTS = ("text", "input_text", "output_text")  # chat completions' and the Responses API's
MEDIA_PARTS = ("image_url", "input_image", "input_audio", "audio_url", "video_url", "file", "input_file")


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """The request's `messages`, checked: each one's role, its content as one text, and its name if any."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    out: list[dict[str, Any]] = []
    called: set[str] = set()  # the ids of the tool calls made so far
    for index, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"each message needs a role: {', '.join(ROLES)}", param="messages")
        calls = message.get("tool_calls") if message["role"] == "assistant" else None
        content = message.get("content")
        parsed: dict[str, Any] = {"role": message["role"], "content": "" if content is None and calls else None}
        if parsed["content"] is None:
            parsed["content"] = _text(content, index)
        if calls is not None:
            parsed["tool_calls"] = _calls(calls, index)
            called.update(c["id"] for c in parsed["tool_calls"])
        if message["role"] == "tool":
            answered = message.get("tool_call_id")
            if answered not in called:
                raise ApiError(400, f"messages[{index}]: tool_call_id {answered!r} answers no earlier tool call",
                               param="messages")  # fmt: skip
            parsed["tool_call_id"] = answered
        name = message.get("name")
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ApiError(400, f"messages[{index}].name must be a non-empty string", param="messages")
            parsed["name"] = name
        out.append(parsed)
    return out


def _calls(value: Any, index: int) -> list[dict[str, Any]]:
    """An assistant message's tool calls, their arguments as objects (what chat templates render)."""
    import json

    where = f"messages[{index}].tool_calls"
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"{where} must be a non-empty list", param="messages")
    calls = []
    for number, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str) or not function.get("name"):
            raise ApiError(400, f'{where}[{number}]: expected {{"id", "type": "function", "function": {{"name", '
                           '"arguments"}}}}', param="messages")  # fmt: skip
        arguments = function.get("arguments") or "{}"
        try:
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            raise ApiError(400, f"{where}[{number}].function.arguments is not JSON", param="messages") from None
        calls.append({"id": call["id"], "type": "function",
                      "function": {"name": function["name"], "arguments": arguments}})  # fmt: skip
    return calls


def _text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise ApiError(400, "each message's content must be a string or a non-empty list of parts", param="messages")
    texts = []
    for number, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages[{index}].content[{number}]"
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in MEDIA_PARTS:
            raise ApiError(400, f"{where}: '{kind}' parts need a model that reads them; this one reads text only",
                           param="messages")  # fmt: skip
        else:
            raise ApiError(400, f'{where}: expected a text part {{"type": "text", "text": "..."}}', param="messages")
    return "\n".join(texts)


def for_template(messages: list[dict[str, Any]], template: str | None) -> list[dict[str, Any]]:
    """The messages as this chat template renders them: `developer` becomes `system` where the template never
    names a developer role (most open models' templates know only system, user and assistant)."""
    if "developer" in str(template or ""):
        return messages
    return [{**m, "role": "system"} if m["role"] == "developer" else m for m in messages]
