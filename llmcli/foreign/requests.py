"""llmcli's flags as the request fields of each engine: the flag × engine table of docs/scaling.md.

A flag an engine cannot honour is a usage error naming the flag and the engine, never dropped in silence.
"""

from __future__ import annotations

from typing import Any

from llmcli.errors import UsageError
from llmcli.flags import BY_KEY
from llmcli.foreign.detect import LLAMA_CPP_PY, OPENAI, VLLM, Engine
from llmcli.genargs import parse_logit_bias

# flag key → the request field that carries it. OpenAI's own fields travel everywhere; vLLM adds its
# documented extensions. `do_sample` travels as temperature 0 (greedy) or the engine's default sampling.
OPENAI_FIELDS = {
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "num_return_sequences": "n",
    "stop": "stop",
    "do_sample": "temperature",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "logit_bias": "logit_bias",
}
VLLM_FIELDS = {
    **OPENAI_FIELDS,
    "min_new_tokens": "min_tokens",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
}
FIELDS = {VLLM: VLLM_FIELDS, LLAMA_CPP_PY: OPENAI_FIELDS, OPENAI: OPENAI_FIELDS}


def refuse_untravelled(engine: Engine, flags: dict[str, Any], extra: list[str]) -> None:
    table = FIELDS[engine.kind]
    for key, value in flags.items():
        if key not in table and value is not None:
            raise UsageError(f"{BY_KEY[key].option} cannot travel to {engine.label}: it has no such setting")
    if extra:
        raise UsageError(f"--set configures transformers' generate(); {engine.label} does not run it")


def sampling_fields(engine: Engine, flags: dict[str, Any], *, seed: int | None) -> dict[str, Any]:
    table = FIELDS[engine.kind]
    body: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None or key == "do_sample":
            continue
        body[table[key]] = value
    if flags.get("logit_bias"):  # OpenAI's shape: {"token id": bias}
        body["logit_bias"] = {str(k): v for k, v in parse_logit_bias(flags["logit_bias"]).items()}
    if flags.get("do_sample") is False:
        body["temperature"] = 0
    if seed is not None:
        body["seed"] = seed
    return body


def prompts_of(body: dict[str, Any]) -> list[str]:
    """The prompts of llmcli's generate body: its prompts, or chat's conversation's last message ("" for
    --show-config, which has none)."""
    messages = body.get("messages")
    return [messages[-1]["content"]] if messages else body.get("prompts") or [""]


def generate_request(engine: Engine, body: dict[str, Any], prompt: str, messages: list | None) -> tuple[str, dict]:
    """The path and body of one OpenAI request for one prompt of llmcli's generate body."""
    flags = body.get("flags") or {}
    refuse_untravelled(engine, flags, body.get("set") or [])
    request: dict[str, Any] = {"model": body.get("model") or (engine.models[0] if engine.models else "")}
    request |= sampling_fields(engine, flags, seed=body.get("seed"))
    logprobs = body.get("logprobs")
    if engine.kind == VLLM:
        request["return_token_ids"] = True  # token ids, as the generate --json record carries them
    if messages is None and body.get("raw"):  # as generate --raw: the prompt as it is, no chat template
        request["prompt"] = prompt
        path = "/v1/completions"
        if logprobs is not None:
            request["logprobs"] = logprobs
    else:
        system = body.get("system")
        request["messages"] = messages or [*([{"role": "system", "content": system}] if system else []),
                                           {"role": "user", "content": prompt}]  # fmt: skip
        path = "/v1/chat/completions"
        if logprobs is not None:
            request |= {"logprobs": True, "top_logprobs": logprobs}
    constraint = body.get("constraint")
    if constraint is not None:
        request |= constraint_fields(engine, constraint)
    if logprobs is not None:
        if engine.kind != VLLM:
            raise UsageError(f"--logprobs needs token ids, which {engine.label} does not return")
        request["return_tokens_as_token_ids"] = True
    refuse_ignored(engine, request)
    return path, request


def refuse_ignored(engine: Engine, request: dict[str, Any]) -> None:
    """A field this engine was caught ignoring (foreign.memory) is refused before anything is sent; `n` is
    made up for with one request per sequence instead (foreign.openai)."""
    from llmcli.foreign.checks import FLAG_OF

    for field, evidence in engine.ignores.items():
        if field != "n" and request.get(field) not in (None, False):
            raise UsageError(
                f"{FLAG_OF.get(field, field)} cannot travel to {engine.label}: it ignores {field} "
                f"(an earlier answer {evidence})"
            )


def constraint_fields(engine: Engine, constraint: dict[str, str]) -> dict[str, Any]:
    """Structured output: vLLM's `structured_outputs` (all four kinds); OpenAI's `response_format` (JSON only)."""
    import json

    kind, source = constraint["kind"], constraint["source"]
    if engine.kind == VLLM:
        value: Any = {"json_schema": lambda: {"json": json.loads(source)}, "json_object": lambda: {"json_object": True},
                      "regex": lambda: {"regex": source}, "grammar": lambda: {"grammar": source}}[kind]()  # fmt: skip
        return {"structured_outputs": value}
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if kind == "json_schema":
        schema = {"name": "output", "schema": json.loads(source)}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    raise UsageError(f"--{kind} cannot travel to {engine.label}: it takes JSON response formats only")
