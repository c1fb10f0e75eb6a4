"""The Responses API's store for previous_response_id, without a server: first in, first out as documented,
`store: false` honoured, and an answer with no result stored as a message a later turn can render."""

from __future__ import annotations

import pytest

from llmcli.server.api_error import ApiError
from llmcli.server.protocol import parse_openai
from llmcli.server.responses_api import STORE_LIMIT, Store, answer_message, finished, parse_responses


def test_the_store_keeps_the_last_responses_created_and_using_one_does_not_keep_it_longer():
    store = Store()
    for number in range(STORE_LIMIT):
        store.put(f"resp_{number}", [{"role": "user", "content": str(number)}])
    assert store.get("resp_0")[0]["content"] == "0"  # used just before the next one is stored
    store.put("resp_new", [])
    with pytest.raises(ApiError) as gone:
        store.get("resp_0")
    assert gone.value.status == 404 and f"the last {STORE_LIMIT} responses" in gone.value.message
    assert store.get("resp_1") and store.get("resp_new") == []


def test_store_false_keeps_a_response_out():
    store = Store()
    kept, unkept = (parse_responses({"input": "hi", "store": flag}, store) for flag in (True, False))
    for turn in (kept, unkept):
        finished(turn, store, {"role": "assistant", "content": "hello"})
    assert store.get(kept.id)[-1]["content"] == "hello"
    with pytest.raises(ApiError):
        store.get(unkept.id)


def test_a_response_with_no_result_stores_a_message_the_next_turn_renders():
    store = Store()
    turn = parse_responses({"input": "hi", "stream": True}, store)
    job = parse_openai(turn.chat, chat=True, cap=16)
    finished(turn, store, answer_message(job, []))
    following = parse_responses({"input": "again?", "previous_response_id": turn.id}, store)
    messages = parse_openai(following.chat, chat=True, cap=16).messages
    assert [m["role"] for m in messages] == ["user", "assistant", "user"] and messages[1]["content"] == ""
