"""`llmcli serve` under a mixed load, with the step scheduler batching: a crowd of good, bad and leaving
clients; a client that leaves while its row is mid-batch; SIGTERM while a mixed batch runs.

The server loads float32: a batched answer is compared with the same request answered alone."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.server.test_serve import KEY, auth, post, serving, start_server


@pytest.fixture(scope="module")
def busy_server(tiny_dir):
    yield from serving(tiny_dir, "--max-tokens", "64", "--queue-size", "12", "--dtype", "float32")


def body(index: int, tokens: int = 24) -> dict:
    """The index-th client's own request: greedy or sampled with its own seed, top-k or top-p, a stop string."""
    mine = {"prompt": f"client {index} says", "max_tokens": tokens, "ignore_eos": True}
    if index % 3 == 0:
        return {**mine, "temperature": 0}
    if index % 3 == 1:
        return {**mine, "temperature": 0.8, "top_p": 0.9, "seed": index}
    return {**mine, "temperature": 1.1, "top_k": 30, "seed": index, "stop": ["zz"]}


def leave_mid_stream(url: str) -> int:
    stream = {"prompt": "leaving", "max_tokens": 64, "ignore_eos": True, "stream": True, "temperature": 0.7}
    with httpx.stream("POST", url + "/v1/completions", json=stream, headers=auth(), timeout=60) as response:
        for index, _line in enumerate(response.iter_lines()):
            if index > 2:
                break
        return response.status_code


def wait_idle(url: str) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(url + "/health").json()["in_flight"]:
        assert time.monotonic() < deadline, "a slot stayed taken"
        time.sleep(0.1)


def test_a_crowd_of_good_bad_and_leaving_clients(busy_server):
    url = busy_server
    senders = {
        "good": lambda i: post(url, "/v1/completions", body(i)),
        "leaves": lambda i: leave_mid_stream(url),
        "malformed": lambda i: httpx.post(url + "/v1/completions", content=b"{oops", headers=auth(), timeout=60),
        "oversized": lambda i: post(url, "/v1/completions", {"prompt": "x" * 2_000_000}),
        "keyless": lambda i: post(url, "/v1/completions", body(i), key=None),
    }
    kinds = [list(senders)[i % len(senders)] for i in range(33)]
    with ThreadPoolExecutor(33) as pool:
        answers = list(pool.map(lambda i: (kinds[i], i, senders[kinds[i]](i)), range(33)))
    expected = {"malformed": 400, "oversized": 413, "keyless": 401}
    served = []
    for kind, index, answer in answers:
        if kind == "leaves":
            assert answer in (200, 503)
            continue
        if answer.status_code == 503:  # the queue was full: said so, with when to retry
            assert answer.headers["Retry-After"] == "1" and answer.json()["error"]["type"] == "server_busy"
            continue
        assert answer.status_code == expected.get(kind, 200), answer.text
        if kind == "good":
            served.append((index, answer.json()))
    assert served, "every good request was turned away"
    wait_idle(url)
    for index, answer in served:  # each batched answer is the one the request gets alone
        alone = post(url, "/v1/completions", body(index)).json()
        assert answer["choices"][0]["text"] == alone["choices"][0]["text"]
        assert alone["batch"]["shared"] is False
    assert any(a["batch"]["shared"] for _, a in served)


def test_a_client_that_leaves_mid_batch_leaves_the_other_rows_unchanged(busy_server):
    url = busy_server
    with ThreadPoolExecutor(5) as pool:
        rows = [pool.submit(post, url, "/v1/completions", body(i, tokens=48)) for i in range(4)]
        time.sleep(0.2)
        assert leave_mid_stream(url) == 200  # its row joined the batch, streamed a little, and its client went
        answers = [r.result().json() for r in rows]
    wait_idle(url)
    for index, answer in enumerate(answers):
        assert answer["usage"]["completion_tokens"] == 48
        alone = post(url, "/v1/completions", body(index, tokens=48)).json()
        assert answer["choices"][0]["text"] == alone["choices"][0]["text"]


def test_sigterm_while_a_mixed_batch_runs_finishes_every_row_then_exits_0(tiny_dir):
    proc, url = start_server(tiny_dir, "--dtype", "float32")
    results: dict[int, httpx.Response] = {}
    workers = [
        threading.Thread(target=lambda i=i: results.update({i: post(url, "/v1/completions", body(i, tokens=120))}))
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    while httpx.get(url + "/llmcli/v1/ps", headers={"Authorization": f"Bearer {KEY}"}).json()["rows_running"] < 2:
        assert time.monotonic() < deadline, "the requests never decoded together"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.join(timeout=120)
    assert sorted(results) == [0, 1, 2, 3]
    for answer in results.values():
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] == 120  # ran to its end, not cut by the shutdown
    assert proc.wait(timeout=60) == 0


def test_a_bad_kv_memory_is_one_line_before_loading(capsys, monkeypatch):
    from tests.helpers import assert_clean_error, run_cli

    run = run_cli(["serve", "--kv-memory", "lots"], capsys, monkeypatch)
    assert_clean_error(run, 2, "--kv-memory lots", "4GiB")


def test_settings_transformers_refuses_are_the_clients_400(busy_server):
    refused = {"prompts": ["x"], "flags": {"do_sample": True, "max_new_tokens": 4}, "set": ["top_k=-5"]}
    answer = post(busy_server, "/llmcli/v1/generate", refused)
    assert answer.status_code == 400, answer.text
    assert "top_k" in answer.json()["error"]["message"] and "Traceback" not in answer.text
    assert post(busy_server, "/v1/completions", body(1)).status_code == 200
