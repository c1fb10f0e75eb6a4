"""Tools as clients send them, parsed and read back without a server: the request's checks, each family's
call format, what a malformed call becomes, the streamed content held back, the templates."""

from __future__ import annotations

import json

import pytest

from llmcli.server.api_error import ApiError
from llmcli.server.tool_calls import ContentFilter, parse_tools, read_calls
from llmcli.server.tool_template import HERMES_TOOLS, parser_for, tool_template

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather", "parameters": CITY}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}


def tools(**extra):
    return parse_tools({"tools": [WEATHER, ADD], **extra})


HERMES_ONE = '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'
HERMES_TWO = (
    '<tool_call>{"name": "add", "arguments": "{\\"a\\": 2}"}</tool_call>'
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
)
LLAMA = '{"name": "add", "parameters": {"a": 3}}; {"name": "add", "parameters": {}}'
MISTRAL = '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Rome"}}]'
# Arguments whose strings hold each format's separators and closings
SQL = {"sql": "SELECT 1; SELECT 2", "note": "} and </tool_call> and [TOOL_CALLS] inside"}
SQL_JSON = json.dumps(SQL)
HERMES_INSIDE = f'<tool_call>{{"name": "add", "arguments": {SQL_JSON}}}</tool_call>\nDone, see above.'
LLAMA_INSIDE = f'{{"name": "add", "parameters": {SQL_JSON}}}; {{"name": "add", "parameters": {{"b": ";"}}}}'
MISTRAL_NEW = f'[TOOL_CALLS]get_weather[ARGS]{{"city": "Rome"}}[TOOL_CALLS]add[CALL_ID]a1b2c3d4e[ARGS]{SQL_JSON}'


@pytest.mark.parametrize(
    "text,parser,content,calls",
    [
        ("Sure.\n" + HERMES_ONE, "hermes", "Sure.", [("add", {"a": 1})]),
        (HERMES_TWO, "hermes", None, [("add", {"a": 2}), ("get_weather", {"city": "Oslo"})]),
        (LLAMA, "llama3_json", None, [("add", {"a": 3}), ("add", {})]),
        (MISTRAL, "mistral", None, [("get_weather", {"city": "Rome"})]),
        ("No tools needed: 4.", "hermes", "No tools needed: 4.", []),
        ("Checking.\n" + HERMES_INSIDE, "hermes", "Checking.\nDone, see above.", [("add", SQL)]),
        (LLAMA_INSIDE, "llama3_json", None, [("add", SQL), ("add", {"b": ";"})]),
        ("<|python_tag|>" + LLAMA_INSIDE, "llama3_json", None, [("add", SQL), ("add", {"b": ";"})]),
        (MISTRAL_NEW, "mistral", None, [("get_weather", {"city": "Rome"}), ("add", SQL)]),
        (MISTRAL + " Anything else?", "mistral", "Anything else?", [("get_weather", {"city": "Rome"})]),
    ],
)
def test_each_format_reads_back_as_openais_tool_calls(text, parser, content, calls):
    got_content, got = read_calls(text, tools(), parser)
    assert got_content == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got] == calls
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in got)


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "add", "arguments": {"a": 1}</tool_call>',  # broken JSON
        '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>',  # not offered
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "add", "arguments": [1, 2]}</tool_call>',  # arguments not an object
    ],
)
def test_a_malformed_call_under_auto_comes_back_as_text(text):
    assert read_calls(text, tools(), "hermes") == (text, [])


@pytest.mark.parametrize(
    "text,parser",
    [
        ('{"name": "add", "parameters": {}} and then some words', "llama3_json"),
        ('{"name": "add", "parameters": {"a": 1}', "llama3_json"),  # cut short
        ("[TOOL_CALLS]get_weather{}", "mistral"),  # no [ARGS]
        ('[TOOL_CALLS]get_weather[ARGS]{"city": ', "mistral"),
    ],
)
def test_a_malformed_call_in_the_other_formats_comes_back_as_text(text, parser):
    assert read_calls(text, tools(), parser) == (text, [])


def test_forced_answers_are_the_calls_json_and_parallel_false_keeps_one_call():
    forced = tools(tool_choice={"type": "function", "function": {"name": "add"}})
    content, [call] = read_calls('{"name": "add", "arguments": {"a": 5}}', forced, "hermes")
    assert content is None and json.loads(call["function"]["arguments"]) == {"a": 5}
    two = '<tool_call>{"name": "add", "arguments": {}}</tool_call><tool_call>{"name": "add", "arguments": {}}'
    assert len(read_calls(two, tools(parallel_tool_calls=False), "hermes")[1]) == 1
    assert read_calls(two, tools(tool_choice="none"), "hermes") == (two, [])


def test_the_call_schema_names_the_forced_function_or_any_offered_one():
    named = json.loads(tools(tool_choice={"type": "function", "function": {"name": "get_weather"}}).call_schema())
    assert named["properties"]["name"] == {"const": "get_weather"}
    assert named["properties"]["arguments"] == WEATHER["function"]["parameters"]
    required = json.loads(tools(tool_choice="required").call_schema())
    assert [one["properties"]["name"]["const"] for one in required["anyOf"]] == ["get_weather", "add"]


@pytest.mark.parametrize(
    "body,needle",
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "add"}}}, "which is not in"),
        ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": 5}}}]}, "not a JSON schema"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "1-64 letters"),
        ({"tools": [{"type": "code_interpreter"}]}, 'expected {"type": "function"'),
        ({"tools": [ADD, ADD]}, "names a function twice"),
        ({"tool_choice": "required"}, "'tool_choice' needs 'tools'"),
        ({"tools": [ADD], "tool_choice": "sometimes"}, "'tool_choice' must be auto, none, required"),
        ({"tools": [ADD], "parallel_tool_calls": "yes"}, "must be true or false"),
    ],
)
def test_bad_tools_are_refused_naming_the_field(body, needle):
    with pytest.raises(ApiError) as caught:
        parse_tools(body)
    assert caught.value.status == 400 and needle in caught.value.message


def test_streamed_content_stops_where_a_call_may_begin():
    held = ContentFilter(tools(), "hermes")
    pieces = [held.feed(p) for p in ["Let me ", "check <tool", "_call>\n{", '"name"']]
    assert pieces == ["Let me ", "check ", "", ""] and held.rest("Let me check", has_calls=True) == ""
    plain = ContentFilter(tools(), "hermes")
    assert [plain.feed(p) for p in ["a <", "b"]] == ["a ", "<b"] and plain.rest("a <b", has_calls=False) == ""
    forced = ContentFilter(tools(tool_choice="required"), "hermes")
    assert forced.feed('{"name"') == "" and forced.rest(None, has_calls=False) == '{"name"'


def test_streamed_text_after_the_last_call_goes_out_as_the_answer_says():
    text = "Checking.\n" + HERMES_INSIDE
    held = ContentFilter(tools(), "hermes")
    sent = "".join(held.feed(text[i : i + 7]) for i in range(0, len(text), 7))
    content, calls = read_calls(text, tools(), "hermes")
    assert json.loads(calls[0]["function"]["arguments"]) == SQL
    assert sent + held.rest(content, has_calls=True) == "Checking.\nDone, see above."


def test_which_template_renders_tools_and_which_format_it_asks_for():
    chatml = "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}"
    assert tool_template(chatml)[0] == HERMES_TOOLS and parser_for(HERMES_TOOLS) == "hermes"
    own = "{% if tools %}[AVAILABLE_TOOLS]{{ tools }}{% endif %}[TOOL_CALLS]"
    assert tool_template(own) == (own, "the model's chat template") and parser_for(own) == "mistral"
    assert tool_template("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}")[0] is None
    assert parser_for("{% if tools %}<|python_tag|>{% endif %}") == "llama3_json"
