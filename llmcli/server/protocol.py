"""The OpenAI-compatible request and response shapes, and llmcli's own, as plain data (no torch, no HTTP).

A request body becomes a `Job`: the prompts (or chat messages), the decoding flags in the flag table's
terms, the seed and the options around them. Anything the server cannot honour is an `ApiError` naming the
field, never dropped in silence.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from llmcli.errors import UsageError
from llmcli.flags import BY_KEY
from llmcli.plan import Constraint
from llmcli.server.api_error import ApiError
from llmcli.server.compat import generation_config_flags
from llmcli.server.messages import parse_messages
from llmcli.server.tool_calls import parse_tools

# OpenAI's fields and vLLM's extensions → the flag table's keys.
OPENAI_FIELDS = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "min_tokens": "min_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}
ACCEPTED = set(OPENAI_FIELDS) | {
    "model",
    "prompt",
    "messages",
    "n",
    "stop",
    "seed",
    "stream",
    "logprobs",
    "top_logprobs",
    "ignore_eos",
    "user",
    "stream_options",
    "response_format",
    "generation_config",  # transformers chat's settings (server.compat)
    "logit_bias",
    "echo",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}


@dataclass
class Job:
    """One request, ready for the engine."""

    model: str
    prompts: list[str] = field(default_factory=list)  # completions: raw text, no chat template
    messages: list[dict[str, str]] | None = None  # chat: through the model's template
    flags: dict[str, Any] = field(default_factory=dict)  # flag-table keys → values
    extra: list[str] = field(default_factory=list)  # --set items (llmcli's own endpoint)
    seed: int | None = None
    logprobs: int | None = None
    stream: bool = False
    chat: bool = False
    system: str | None = None  # llmcli's endpoint: as generate's --system
    raw: bool = False  # llmcli's endpoint: as generate's --raw
    echo: bool = False  # completions: the prompt before each choice's text
    include_usage: bool = False  # a stream ends with a chunk that carries the usage
    tools: Any = None  # server.tool_calls.ToolRequest: chat's tools and tool_choice
    tool_parser: str = "hermes"  # the served model's format of tool calls (server.tool_template)

    @property
    def choices(self) -> int:
        return self.flags.get("num_return_sequences") or 1

    constraint: Any = None  # plan.Constraint: structured output
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])


def _typed(body: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ApiError(400, f"'{name}' must be {what}", param=name)
    return value


def _flags(body: dict[str, Any], cap: int) -> dict[str, Any]:
    """The request's settings: transformers chat's generation_config first, OpenAI's fields over it."""
    given = body.get("generation_config")
    flags: dict[str, Any] = generation_config_flags(given) if given is not None else {}
    for name, key in OPENAI_FIELDS.items():
        kind = BY_KEY[key].type
        value = _typed(body, name, (int,) if kind is int else (int, float), "an integer" if kind is int else "a number")
        if value is not None:
            flags[key] = kind(value)
    flags["max_new_tokens"] = min(flags.get("max_new_tokens", cap), cap)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", param="stop")
    if stop:
        flags["stop"] = stop
    n = _typed(body, "n", (int,), "an integer") or 1
    if n < 1 or n > 16:
        raise ApiError(400, "'n' must be between 1 and 16", param="n")
    if n > 1:
        flags["num_return_sequences"] = n
        if flags.get("temperature") != 0:
            flags["do_sample"] = True
    bias = _logit_bias(body.get("logit_bias"))
    if bias:
        flags["logit_bias"] = bias
    if body.get("ignore_eos") is True:  # EOS may not end the output before max_tokens
        flags["min_new_tokens"] = flags["max_new_tokens"]
    return flags


def _include_usage(body: dict[str, Any], *, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise ApiError(400, "'stream_options' goes with stream: true", param="stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage", "continuous_usage_stats"}:
        raise ApiError(400, "'stream_options' takes {\"include_usage\": true|false}", param="stream_options")
    if options.get("continuous_usage_stats"):
        raise ApiError(400, "stream_options.continuous_usage_stats is not served", param="stream_options")
    return options.get("include_usage") is True


def _logit_bias(value: Any) -> list[str]:
    """OpenAI's {"token id": bias} as --logit-bias items; ids are checked against the vocabulary at the call."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ApiError(400, "'logit_bias' must be an object of token id → bias", param="logit_bias")
    items = []
    for token, bias in value.items():
        if not str(token).isdigit():
            raise ApiError(400, f"logit_bias: {token!r} is not a token id", param="logit_bias")
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not -100 <= bias <= 100:
            raise ApiError(400, f"logit_bias: the bias of token {token} must be in [-100, 100]", param="logit_bias")
        items.append(f"{int(token)}={float(bias)}")
    return items


def parse_openai(body: Any, *, chat: bool, cap: int) -> Job:
    """A /v1/completions or /v1/chat/completions body; `cap` is the server's max_tokens limit."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - ACCEPTED)
    if unknown:
        raise ApiError(400, f"'{unknown[0]}' is not supported by this server", param=unknown[0])
    model = _typed(body, "model", (str,), "a string")
    job = Job(model=model or "", flags=_flags(body, cap), chat=chat)
    job.seed = _typed(body, "seed", (int,), "an integer")
    job.stream = bool(_typed(body, "stream", (bool,), "true or false"))
    job.include_usage = _include_usage(body, stream=job.stream)
    job.echo = bool(_typed(body, "echo", (bool,), "true or false"))
    if job.echo and chat:
        raise ApiError(400, "'echo' is a field of /v1/completions, not of chat completions", param="echo")
    if chat:
        job.messages = parse_messages(body.get("messages"))
        job.tools = parse_tools(body)
        if job.tools is not None and job.tools.forced:  # one well-formed call: its JSON, constrained
            job.constraint = Constraint("json_schema", job.tools.call_schema())
        if body.get("logprobs") is True:
            job.logprobs = _typed(body, "top_logprobs", (int,), "an integer") or 0
    else:
        prompt = body.get("prompt")
        job.prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(job.prompts, list) or not job.prompts or not all(isinstance(p, str) for p in job.prompts):
            raise ApiError(400, "'prompt' must be a string or a non-empty list of strings", param="prompt")
        job.logprobs = _typed(body, "logprobs", (int,), "an integer")
    if job.echo and job.logprobs is not None:
        raise ApiError(400, "'echo' with 'logprobs' (the prompt's log-probabilities) is not served yet", param="echo")
    if job.logprobs is not None and not 0 <= job.logprobs <= 20:
        raise ApiError(400, "logprobs must be between 0 and 20", param="logprobs")
    if not chat and any(body.get(k) is not None for k in ("tools", "tool_choice")):
        raise ApiError(400, "'tools' is a field of chat completions", param="tools")
    if body.get("response_format") is not None:
        if job.constraint is not None:
            raise ApiError(400, "tool_choice required or a named function already constrains the answer; drop "
                           "response_format", param="response_format")  # fmt: skip
        job.constraint = _response_format(body.get("response_format"))
    if job.stream and len(job.prompts) > 1:
        raise ApiError(400, "stream works with one prompt on this server", param="stream")
    return job


def parse_llmcli(body: Any, *, cap: int) -> Job:
    """llmcli's own endpoint: the generation plan as `generate` builds it, every flag of the table."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    allowed = {"model", "prompts", "messages", "flags", "set", "seed", "logprobs", "stream", "system", "raw",
               "constraint"}  # fmt: skip
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"'{unknown[0]}' is not a field of llmcli's generate endpoint", param=unknown[0])
    messages = parse_messages(body["messages"]) if "messages" in body else None  # chat's conversation so far
    prompts = [messages[-1]["content"]] if messages else body.get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError(400, "'prompts' must be a non-empty list of strings", param="prompts")
    flags = body.get("flags") or {}
    if not isinstance(flags, dict) or any(k not in BY_KEY for k in flags):
        bad = next((k for k in flags if k not in BY_KEY), "flags") if isinstance(flags, dict) else "flags"
        raise ApiError(400, f"'{bad}' is not a decoding flag", param="flags")
    flags = dict(flags)
    flags["max_new_tokens"] = min(flags.get("max_new_tokens") or cap, cap)
    extra = body.get("set") or []
    if not isinstance(extra, list) or not all(isinstance(s, str) for s in extra):
        raise ApiError(400, "'set' must be a list of key=value strings", param="set")
    job = Job(model=body.get("model") or "", prompts=prompts, flags=flags, extra=extra)
    job.messages, job.chat = messages, messages is not None
    job.seed = _typed(body, "seed", (int,), "an integer")
    job.logprobs = _typed(body, "logprobs", (int,), "an integer")
    job.stream = bool(_typed(body, "stream", (bool,), "true or false"))
    job.system = _typed(body, "system", (str,), "a string")
    job.raw = bool(_typed(body, "raw", (bool,), "true or false"))
    job.constraint = _constraint(body.get("constraint"))
    return job


def _constraint(value: Any) -> Any:
    """llmcli's endpoint: {"kind": json_schema|json_object|regex|grammar, "source": text}, as plan.Constraint."""
    from llmcli.plan import Constraint

    if value is None:
        return None
    kinds = ("json_schema", "json_object", "regex", "grammar")
    if not isinstance(value, dict) or value.get("kind") not in kinds or not isinstance(value.get("source"), str):
        raise ApiError(400, f"'constraint' must be {{\"kind\": one of {', '.join(kinds)}, \"source\": text}}",
                       param="constraint")  # fmt: skip
    return Constraint(value["kind"], value["source"])


def _response_format(value: Any) -> Any:
    """OpenAI's response_format: json_object, or json_schema with its schema; text is no constraint."""
    import json

    from llmcli.plan import Constraint

    if value is None or value == {"type": "text"}:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "json_object":
        return Constraint("json_object", "")
    schema = (value.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    if not isinstance(schema, dict):
        raise ApiError(400, "response_format: expected {\"type\": \"json_object\"} or "
                       "{\"type\": \"json_schema\", \"json_schema\": {\"schema\": {...}}}",
                       param="response_format")  # fmt: skip
    return Constraint("json_schema", json.dumps(schema))


def usage_error(exc: UsageError) -> ApiError:
    """A flag the checks refuse (out of range, a contradiction) is the client's error, in the CLI's words."""
    return ApiError(400, exc.message)


def parse_tool(body: Any, fields: dict[str, tuple[tuple[type, ...], str]], *, required: tuple[str, ...]) -> dict:
    """The body of one of llmcli's other endpoints (next-token, score, tokenize): known fields, right types, and
    one of the `required` fields at least."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - set(fields) - {"model"})
    if unknown:
        raise ApiError(400, f"'{unknown[0]}' is not a field of this endpoint", param=unknown[0])
    values = {name: _typed(body, name, kinds, what) for name, (kinds, what) in fields.items()}
    if all(values.get(name) is None for name in required):
        raise ApiError(400, f"'{required[0]}' is required", param=required[0])
    values["model"] = _typed(body, "model", (str,), "a string") or ""
    return values
