"""llmcli serve under clients no one here wrote: the official `openai` client, LangChain's ChatOpenAI and
LiteLLM, each used the way its documentation shows, against the default model (SmolLM2-135M-Instruct, whose
ChatML template gets llmcli's Hermes-style tool template). Under tool_choice required or a named function the
call is constrained, so even a 135M model's arguments parse and validate."""

from __future__ import annotations

import json
import os

import jsonschema
import pytest

from tests.helpers import run_cli
from tests.server.test_serve import KEY, serving

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
           "parameters": CITY}}  # fmt: skip
SUM = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": SUM}}
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]
CHAT = {"messages": ASK, "tools": [WEATHER, ADD], "max_tokens": 40, "temperature": 0}


@pytest.fixture(scope="module")
def server(default_model_dir):
    yield from serving(default_model_dir, "--max-tokens", "48", "--dtype", "float32")


@pytest.fixture(scope="module")
def api(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key=KEY)


def checked(call, tools=(WEATHER, ADD)):
    """The call's arguments, parsed and validated against the schema of the function it names."""
    schema = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == call.function.name)
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, schema)
    return arguments


def test_openai_a_tool_round_trip_call_result_answer(api, default_model_dir):
    first = api.chat.completions.create(model=default_model_dir.name, **CHAT, tool_choice="required")
    [call] = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and first.choices[0].message.content is None
    checked(call)
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "12 C, light rain"}]  # fmt: skip
    then = {"tools": [WEATHER, ADD], "max_tokens": 12, "temperature": 0}
    final = api.chat.completions.create(model=default_model_dir.name, messages=history, **then)
    assert final.choices[0].finish_reason in ("stop", "length", "tool_calls")
    without = api.chat.completions.create(model=default_model_dir.name, messages=history[:2], **then)
    assert final.usage.prompt_tokens > without.usage.prompt_tokens  # the tool's result reached the prompt


def test_openai_a_named_function_and_its_streamed_call(api, default_model_dir):
    named = {"type": "function", "function": {"name": "add"}}
    whole = api.chat.completions.create(model=default_model_dir.name, **CHAT, tool_choice=named)
    [call] = whole.choices[0].message.tool_calls
    assert call.function.name == "add" and set(checked(call)) == {"a", "b"}
    chunks = list(api.chat.completions.create(model=default_model_dir.name, **CHAT, tool_choice=named, stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas] == ["add"] and deltas[0].id.startswith("call_")
    assert deltas[0].function.arguments == call.function.arguments  # greedy: the same call, whole or streamed
    assert not any(c.choices[0].delta.content for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_ps_says_how_tool_calls_are_read(server, capsys, monkeypatch):
    monkeypatch.setenv("LLMCLI_API_KEY", KEY)
    run = run_cli(["ps", "--server", server, "--json"], capsys, monkeypatch)
    [model] = run.json()["models"]
    assert model["tool_parser"] == "hermes" and "Hermes-style" in model["tools"]


def test_langchain_bind_tools_and_structured_output_through_function_calling(server, default_model_dir):
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    llm = ChatOpenAI(base_url=server + "/v1", api_key=KEY, model=default_model_dir.name, temperature=0, max_tokens=40)
    answer = llm.bind_tools([WEATHER, ADD], tool_choice="any").invoke("What is the weather in Oslo?")
    [call] = answer.tool_calls
    jsonschema.validate(call["args"], {"get_weather": CITY, "add": SUM}[call["name"]])

    class Sum(BaseModel):
        """Two integers to add."""

        a: int
        b: int

    parsed = llm.with_structured_output(Sum, method="function_calling").invoke("Add 2 and 3.")
    assert isinstance(parsed, Sum)


def test_litellm_completion_with_tools(server, default_model_dir, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else it fetches a cost map on import
    import litellm

    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    answer = litellm.completion(model=f"openai/{default_model_dir.name}", api_base=server + "/v1", api_key=KEY,
                                messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=40,
                                temperature=0)  # fmt: skip
    [call] = answer.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), CITY)
