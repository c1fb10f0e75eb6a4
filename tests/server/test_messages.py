"""Chat messages as clients send them, parsed without a server: content parts, roles, names, the template."""

from __future__ import annotations

import pytest

from llmcli.server.api_error import ApiError
from llmcli.server.messages import for_template, parse_messages

CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}"
WITH_DEVELOPER = "{% if m['role'] == 'developer' %}# Instructions{% endif %}" + CHATML


def test_text_parts_are_joined_in_order_and_a_name_is_kept():
    parsed = parse_messages(
        [
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "name": "ann", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ]
    )
    assert parsed == [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "a\nb", "name": "ann"},
    ]


def test_developer_becomes_system_only_where_the_template_has_no_developer_role():
    messages = [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}]
    assert [m["role"] for m in for_template(messages, CHATML)] == ["system", "user"]
    assert [m["role"] for m in for_template(messages, WITH_DEVELOPER)] == ["developer", "user"]
    assert messages[0]["role"] == "developer"  # the request's own list is left as it was


AUDIO = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}


@pytest.mark.parametrize(
    "messages,needle",
    [
        ([{"role": "user", "content": [AUDIO]}], "messages[0].content[0]: 'input_audio' parts need a model"),
        ([{"role": "user", "content": "x"}, {"role": "user", "content": [{"type": "text"}]}], "messages[1].content[0]"),
        ([{"role": "user", "content": []}], "a string or a non-empty list of parts"),
        ([{"role": "user", "content": "x", "name": 3}], "messages[0].name must be a non-empty string"),
        ([{"role": "function", "content": "x"}], "system, developer, user, assistant"),
        ([], "'messages' must be a non-empty list"),
    ],
)
def test_what_cannot_be_rendered_is_refused_naming_the_message_and_part(messages, needle):
    with pytest.raises(ApiError) as caught:
        parse_messages(messages)
    assert caught.value.status == 400 and needle in caught.value.message and caught.value.param == "messages"
