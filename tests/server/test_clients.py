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
    # The reason follows from the answer itself: a call, the 12-token cap reached, or the model's own end
    message, used = final.choices[0].message, final.usage.completion_tokens
    expected = "tool_calls" if message.tool_calls else "length" if used == then["max_tokens"] else "stop"
    assert final.choices[0].finish_reason == expected and used <= then["max_tokens"]
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


def test_openai_responses_plain_and_with_a_previous_response(api, default_model_dir):
    """responses.create runs as the chat request it stands for: the same greedy tokens."""
    model = default_model_dir.name
    first = api.responses.create(model=model, input="Say hello in French.", instructions="Be brief.",
                                 max_output_tokens=12, temperature=0)  # fmt: skip
    asked = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello in French."}]
    chat = api.chat.completions.create(model=model, messages=asked, max_tokens=12, temperature=0)
    assert first.output_text == chat.choices[0].message.content and first.object == "response"
    assert first.usage.input_tokens == chat.usage.prompt_tokens
    assert first.status == ("incomplete" if chat.choices[0].finish_reason == "length" else "completed")
    second = api.responses.create(model=model, input="And in German?", previous_response_id=first.id,
                                  max_output_tokens=12, temperature=0)  # fmt: skip
    history = [
        asked[1],
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And in German?"},
    ]
    again = api.chat.completions.create(model=model, messages=history, max_tokens=12, temperature=0)
    assert second.output_text == again.choices[0].message.content  # the instructions were this turn's alone
    with api.responses.stream(model=model, input="Say hello in French.", instructions="Be brief.",
                              max_output_tokens=12, temperature=0) as events:  # fmt: skip
        kinds, deltas = [], []
        for event in events:
            kinds.append(event.type)
            deltas += [event.delta] if event.type == "response.output_text.delta" else []
        streamed = events.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(deltas) == streamed.output_text == first.output_text


def test_openai_responses_with_a_function_tool_and_a_json_schema(api, default_model_dir):
    model = default_model_dir.name
    tool = {"type": "function", **WEATHER["function"]}
    called = api.responses.create(model=model, input="What is the weather in Oslo?", tools=[tool],
                                  tool_choice="required", max_output_tokens=40, temperature=0)  # fmt: skip
    [call] = called.output
    assert call.type == "function_call" and call.name == "get_weather" and called.status == "completed"
    jsonschema.validate(json.loads(call.arguments), CITY)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "12 C, light rain"}
    answered = api.responses.create(model=model, previous_response_id=called.id, input=[result], tools=[tool],
                                    max_output_tokens=12, temperature=0)  # fmt: skip
    assert answered.usage.input_tokens > called.usage.input_tokens and answered.output
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"],
              "additionalProperties": False}  # fmt: skip
    text = {"format": {"type": "json_schema", "name": "city", "schema": schema}}
    shaped = api.responses.create(model=model, input="Name a city.", max_output_tokens=40, temperature=0, text=text)
    jsonschema.validate(json.loads(shaped.output_text), schema)


def test_responses_bad_input_is_a_400_or_404_naming_the_field(server):
    import httpx

    headers = {"Authorization": f"Bearer {KEY}"}
    unknown = httpx.post(server + "/v1/responses", json={"input": "x", "previous_response_id": "resp_gone"},
                         headers=headers, timeout=30)  # fmt: skip
    assert unknown.status_code == 404 and "'resp_gone' is not held" in unknown.json()["error"]["message"]
    for body, needle in [
        ({"input": "x", "reasoning": {"effort": "low"}}, "'reasoning' is not supported"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "only function tools are served"),
        ({"input": [{"type": "image_generation_call"}]}, "input[0]: expected a message"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format: expected"),
    ]:
        refused = httpx.post(server + "/v1/responses", json=body, headers=headers, timeout=30)
        assert refused.status_code == 400 and needle in refused.json()["error"]["message"], refused.text


def _sse(response):
    """The data of each server-sent event of an httpx streaming response."""
    return [json.loads(line[len("data: ") :]) for line in response.iter_lines() if line.startswith("data: ")]


def test_every_response_and_stream_event_is_one_of_openais_types(server, default_model_dir):
    """Checked against the openai package's own pydantic types, strictly, not just read by its client."""
    import httpx
    from openai.types.responses import Response, ResponseStreamEvent
    from pydantic import TypeAdapter

    headers = {"Authorization": f"Bearer {KEY}"}
    tool = {"type": "function", **WEATHER["function"]}
    bodies = [
        {"input": "Say hello.", "max_output_tokens": 8, "temperature": 0},
        {"input": "What is the weather in Oslo?", "tools": [tool], "tool_choice": "required",
         "max_output_tokens": 40, "temperature": 0},
    ]  # fmt: skip
    events = TypeAdapter(ResponseStreamEvent)
    for body in bodies:
        body = {"model": default_model_dir.name, **body}
        whole = httpx.post(server + "/v1/responses", json=body, headers=headers, timeout=120)
        assert whole.status_code == 200, whole.text
        Response.model_validate(whole.json(), strict=False)
        with httpx.stream("POST", server + "/v1/responses", json={**body, "stream": True}, headers=headers,
                          timeout=120) as streamed:  # fmt: skip
            seen = [events.validate_python(event) for event in _sse(streamed)]
        assert seen[0].type == "response.created" and seen[-1].type == "response.completed"
        assert [e.sequence_number for e in seen] == list(range(1, len(seen) + 1))
        assert [item.type for item in seen[-1].response.output] == [item["type"] for item in whole.json()["output"]]


def test_a_response_stored_false_cannot_be_continued(server, default_model_dir):
    import httpx

    headers = {"Authorization": f"Bearer {KEY}"}
    for stream in (False, True):
        body = {"model": default_model_dir.name, "input": "Hi", "max_output_tokens": 4, "store": False}
        if stream:
            with httpx.stream("POST", server + "/v1/responses", json={**body, "stream": True}, headers=headers,
                              timeout=120) as answer:  # fmt: skip
                rid = _sse(answer)[-1]["response"]["id"]
        else:
            rid = httpx.post(server + "/v1/responses", json=body, headers=headers, timeout=120).json()["id"]
        later = httpx.post(server + "/v1/responses", json={"input": "And?", "previous_response_id": rid},
                           headers=headers, timeout=120)  # fmt: skip
        assert later.status_code == 404 and rid in later.json()["error"]["message"]
