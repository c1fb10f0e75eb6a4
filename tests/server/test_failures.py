"""An unexpected error inside serve: logged once on stderr with its request id and traceback, counted for ps,
and answered with OpenAI's error JSON that names the id and holds no traceback or path."""

from __future__ import annotations

import json

import anyio
import pytest


@pytest.fixture
def server():
    from llmcli.server.service import Server, ServeSettings

    return Server({}, ServeSettings())


def broken_app(server):
    from starlette.applications import Starlette
    from starlette.routing import Route

    from llmcli.server.app import guarded

    async def broken(_request):
        raise KeyError("/home/someone/model/secret.safetensors")

    async def route(request):
        return await guarded(server, request, broken)

    return Starlette(routes=[Route("/v1/chat/completions", route, methods=["POST"])])


def test_an_unexpected_error_is_logged_once_with_its_request_id_and_counted(server, capsys):
    from starlette.testclient import TestClient

    client = TestClient(broken_app(server))
    given = client.post("/v1/chat/completions", headers={"X-Request-Id": "my-req-7"})
    assert given.status_code == 500 and given.headers["x-request-id"] == "my-req-7"
    error = given.json()["error"]
    assert "my-req-7" in error["message"] and error["type"] == "server_error"
    assert "secret" not in given.text and "Traceback" not in given.text
    made = client.post("/v1/chat/completions")
    rid = made.headers["x-request-id"]
    assert rid.startswith("req_") and rid in made.json()["error"]["message"]
    log = capsys.readouterr().err
    assert log.count("request my-req-7 (POST /v1/chat/completions) failed: KeyError") == 1
    assert log.count(f"request {rid} ") == 1 and log.count("Traceback (most recent call last)") == 2
    assert server.status()["failed_requests"] == 2


def test_an_error_in_a_stream_ends_it_with_an_error_event_and_is_logged(server, capsys):
    from starlette.requests import Request

    async def events():
        yield "first"
        raise RuntimeError("the step broke")

    request = Request({"type": "http", "method": "POST", "path": "/v1/completions", "headers": []})

    async def collect():
        error = lambda message: json.dumps({"error": message})  # noqa: E731
        return [event async for event in server.logged(events(), request, error)]

    first, last = anyio.run(collect)
    assert first == "first" and "internal error (request req_" in json.loads(last)["error"]
    assert "RuntimeError: the step broke" in capsys.readouterr().err
    assert server.status()["failed_requests"] == 1


def test_ps_shows_the_failures():
    from llmcli.reports.ps import build

    data = {"models": [], "in_flight": 0, "queue_size": 64, "uptime_seconds": 3.0, "failed_requests": 2}
    assert "; 2 failed" in build(data, "local").sections[0].blocks[1].text
