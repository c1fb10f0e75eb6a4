"""A chat request's prompt ids: its messages through the model's chat template (or serve --chat-template),
with the request's tools where the template renders them (server.tool_template), and, when tool_choice forces
a call, the opening of that call, so that the constrained answer is the call's JSON itself."""

from __future__ import annotations

from typing import Any

from llmcli.errors import squash
from llmcli.server.api_error import ApiError
from llmcli.server.messages import for_template
from llmcli.server.tool_formats import FORMATS


def chat_ids(served: Any, tokenizer: Any, job: Any) -> list[int]:
    import jinja2

    template = _template(served, tokenizer, job)
    messages = for_template(job.messages, template)
    tools = job.tools.rendered() if job.tools is not None else None
    options = {"tools": tools, "chat_template": template, "add_generation_prompt": True}
    try:
        rendered = tokenizer.apply_chat_template(messages, **options, tokenize=True, return_dict=True)
    except (jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
        message = f"the chat template cannot render these messages: {squash(exc)}"
        raise ApiError(400, message, param="messages") from None
    ids = list(rendered["input_ids"])
    if job.tools is not None and job.tools.forced and FORMATS[served.tool_parser].forced_prefix:
        ids += tokenizer.encode(FORMATS[served.tool_parser].forced_prefix, add_special_tokens=False)
    return ids


def _template(served: Any, tokenizer: Any, job: Any) -> Any:
    with_tools = job.tools is not None or any(m["role"] == "tool" or m.get("tool_calls") for m in job.messages)
    if with_tools:
        if served.tools_template is None:
            raise ApiError(400, f"the model '{served.name}' cannot take tools: {served.tools_source} (serve it with "
                           "--chat-template FILE, a template that renders tools)", param="tools")  # fmt: skip
        return served.tools_template
    template = served.chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ApiError(400, f"the model '{served.name}' has no chat template; use /v1/completions")
    return template
