"""`llmcli serve` on localhost: the official openai client, llmcli's own client, concurrency, bad requests,
a client that leaves, SIGTERM, and the safe defaults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.helpers import ROOT, assert_clean_error, cli_env, run_cli

KEY = "test-key-123"


def start_server(model_dir, *extra: str, key: str | None = KEY) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "llmcli", "serve", "-m", str(model_dir), "--port", "0", *extra]
    env = cli_env(**({"LLMCLI_API_KEY": key} if key else {}))
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    line = proc.stderr.readline().decode()
    while line and "serving" not in line:
        line = proc.stderr.readline().decode()
    assert "serving" in line, line
    return proc, line.split(" at ")[1].split(" ")[0]


def serving(model_dir, *extra: str):
    """A module's server: its URL, then SIGTERM and a clean exit 0."""
    proc, url = start_server(model_dir, *extra)
    yield url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def server(tiny_dir):
    # float32 on both sides: server and local runs are two compute paths (and serve's CPU default is float32)
    yield from serving(tiny_dir, "--max-tokens", "64", "--queue-size", "16", "--dtype", "float32")


def post(url, path, body, key=KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + path, json=body, headers=headers, timeout=60, **kwargs)


def local_ids(tiny_dir, args, capsys, monkeypatch):
    run = run_cli(["generate", "-m", str(tiny_dir), *args, "--dtype", "float32", "--json"], capsys, monkeypatch)
    assert run.code == 0, run.stderr
    return [o["token_ids"] for o in run.json()["outputs"]]


def test_openai_client_completions_chat_stream_logprobs(server, tiny_dir, capsys, monkeypatch):
    from openai import OpenAI

    api = OpenAI(base_url=server + "/v1", api_key=KEY)
    assert [m.id for m in api.models.list().data] == [tiny_dir.name]
    done = api.completions.create(model=tiny_dir.name, prompt="The capital", max_tokens=6, temperature=0, logprobs=2)
    expected = local_ids(tiny_dir, ["The capital", "--raw", "--greedy", "-n", "6"], capsys, monkeypatch)[0]
    assert done.usage.completion_tokens == len(expected) and len(done.choices[0].logprobs.tokens) == len(expected)
    assert all(len(top) == 2 for top in done.choices[0].logprobs.top_logprobs)
    messages = [{"role": "user", "content": "hello there"}]
    chat = api.chat.completions.create(model=tiny_dir.name, messages=messages, max_tokens=8, temperature=0)
    pieces = api.chat.completions.create(
        model=tiny_dir.name, messages=messages, max_tokens=8, temperature=0, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in pieces)
    assert streamed == chat.choices[0].message.content and chat.choices[0].finish_reason in ("stop", "length")
    local = run_cli(
        ["generate", "-m", str(tiny_dir), "hello there", "--greedy", "-n", "8", "--dtype", "float32"],
        capsys,
        monkeypatch,
    )
    assert local.stdout == chat.choices[0].message.content + "\n"


@pytest.mark.parametrize("flags", [["--greedy", "-n", "12"], ["-t", "0.9", "--top-k", "20", "--seed", "7", "-n", "12"]])
def test_llmcli_client_is_token_identical_to_local(server, tiny_dir, capsys, monkeypatch, flags):
    monkeypatch.setenv("LLMCLI_API_KEY", KEY)
    args = ["generate", "-m", tiny_dir.name, "--server", server, "hi there", *flags, "--json"]
    remote = run_cli(args, capsys, monkeypatch)
    assert remote.code == 0, remote.stderr
    assert [o["token_ids"] for o in remote.json()["outputs"]] == local_ids(
        tiny_dir, ["hi there", *flags], capsys, monkeypatch
    )
    text = run_cli(args[:-1], capsys, monkeypatch)  # streamed, as local generate streams
    assert (
        text.code == 0
        and text.stdout
        == run_cli(
            ["generate", "-m", str(tiny_dir), "hi there", *flags, "--dtype", "float32"], capsys, monkeypatch
        ).stdout
    )


def test_text_holding_unicode_line_separators_comes_back_whole(server, tiny_dir, capsys, monkeypatch):
    """JSON leaves U+2028 and U+0085 raw in strings; the answer's lines must not end there (a random model's
    sampled text holds them too, which made a flaky failure)."""
    monkeypatch.setenv("LLMCLI_API_KEY", KEY)
    prompt = "one\u2028two\x85three"
    args = ["generate", "-m", tiny_dir.name, "--server", server, prompt, "--greedy", "-n", "4", "--raw"]
    answer = run_cli([*args, "--json"], capsys, monkeypatch)
    assert answer.code == 0, answer.stderr
    assert answer.json()["prompt"] == prompt
    forced = "a\u2028b\x85c"  # the grammar makes the model write them: streamed text events hold them raw
    streamed = run_cli([*args, "-n", "16", "--regex", forced], capsys, monkeypatch)
    assert streamed.code == 0 and streamed.stdout == forced + "\n", streamed.stderr


def test_client_path_imports_neither_torch_nor_transformers(server, tiny_dir):
    code = (
        "import sys; from llmcli.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "sys.stderr.write('HEAVY=%s' % sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    args = ["generate", "--server", server, "-m", tiny_dir.name, "hi", "--greedy", "-n", "3"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=cli_env(LLMCLI_API_KEY=KEY))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().endswith("HEAVY=[]")


# Eight clients at once, each its own flags: greedy, sampling with its own seed, top-k, a stop string, a length.
MIXED_FLAGS = [
    ["--greedy", "-n", "10"],
    ["-t", "0.7", "--top-p", "0.95", "--seed", "1", "-n", "12"],
    ["-t", "1.2", "--top-k", "20", "--seed", "2", "-n", "8"],
    ["--greedy", "-n", "16", "--stop", "a"],
    ["-t", "0.9", "--min-p", "0.05", "--seed", "3", "-n", "14", "--repetition-penalty", "1.3"],
    ["--greedy", "-n", "4"],
    ["-t", "0.8", "--seed", "4", "-n", "10", "--stop", "e"],
    ["-t", "0.6", "--seed", "5", "-n", "9"],
]


def test_eight_concurrent_clients_with_their_own_flags_share_batches(server, tiny_dir, capsys, monkeypatch):
    """Each answer is its solo run's, token for token (float32), and says whether it was batched."""
    monkeypatch.setenv("LLMCLI_API_KEY", KEY)
    prompts = [f"prompt number {i}" for i in range(8)]
    expected = [
        local_ids(tiny_dir, [p, "--raw", *f], capsys, monkeypatch)[0] for p, f in zip(prompts, MIXED_FLAGS, strict=True)
    ]

    def ask(index):
        args = ["generate", "-m", tiny_dir.name, "--server", server, prompts[index], "--raw", *MIXED_FLAGS[index]]
        return subprocess.run([sys.executable, "-m", "llmcli", *args, "--json"], capture_output=True, env=cli_env(),
                              cwd=ROOT)  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(ask, range(8)))
    records = [json.loads(r.stdout) for r in runs]
    assert [r["outputs"][0]["token_ids"] for r in records] == expected
    assert max(r["stats"]["requests_in_batch"] for r in records) > 1
    one = post(server, "/v1/completions", {"prompt": prompts[0], "max_tokens": 10, "temperature": 0}).json()
    assert one["batch"]["shared"] is False and one["batch"]["rows_max"] == 1


HI = {"role": "user", "content": "hi"}
ADD = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
NOPE = {"type": "function", "function": {"name": "nope"}}
PICTURE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
IMAGE = {"role": "user", "content": [{"type": "text", "text": "what is this?"}, PICTURE]}


@pytest.mark.parametrize(
    "send,status,needle",
    [
        (lambda url: httpx.post(url + "/v1/completions", content=b"{not json", headers=auth()), 400, "not valid JSON"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "max_tokens": "many"}), 400, "'max_tokens' must be"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "top_p": 5}), 400, "--top-p must be in"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "best_of": 2}), 400, "'best_of' is not supported"),
        (lambda url: post(url, "/v1/completions", {"model": "/etc", "prompt": "x"}), 404, "not served here"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x" * 2_000_000}), 413, "exceeds"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x"}, key="wrong"), 401, "API key"),
        (lambda url: post(url, "/v1/models", {}, key=None), 405, None),
        (lambda url: post(url, "/v1/chat/completions", {"messages": [IMAGE]}), 400, "'image_url' parts need a model"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "logit_bias": {"a": 1}}), 400, "not a token id"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "logit_bias": {"5": 500}}), 400, "[-100, 100]"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "logit_bias": {"99999": -100}}), 400, "outside"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "presence_penalty": 3}), 400, "[-2, 2]"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "stream_options": {}}), 400, "with stream: true"),
        (lambda url: post(url, "/v1/chat/completions", {"messages": [HI], "echo": True}), 400, "of /v1/completions"),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "echo": True, "logprobs": 1}), 400, "'echo' with"),
        (
            lambda url: post(url, "/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}),
            400,
            "answers no earlier tool call",
        ),
        (
            lambda url: post(url, "/v1/chat/completions", {"messages": [HI], "tools": [ADD], "tool_choice": NOPE}),
            400,
            "'nope', which is not in 'tools'",
        ),
        (lambda url: post(url, "/v1/completions", {"prompt": "x", "tools": [ADD]}), 400, "a field of chat"),
        (lambda url: post(url, "/llmcli/v1/score", {"token_ids": [1]}), 400, "at least two integers"),
        (lambda url: post(url, "/llmcli/v1/score", {"token_ids": [1, 99999]}), 400, "outside the vocabulary"),
        (lambda url: post(url, "/llmcli/v1/score", {"token_ids": [1, 2], "text": "x"}), 400, "scored alone"),
    ],
)
def test_bad_requests_get_json_errors_and_the_server_keeps_serving(server, send, status, needle):
    response = send(server)
    assert response.status_code == status, response.text
    if needle:
        error = response.json()["error"]
        assert needle in error["message"] and "Traceback" not in response.text and "/tmp" not in response.text
    assert httpx.get(server + "/health").status_code == 200


def test_content_parts_the_developer_role_and_names_reach_the_template(server, tiny_dir):
    """What the openai client sends for a text model today: parts joined with a newline (as vLLM joins them),
    `developer` rendered as `system` by a template that has no developer role, a user's `name` accepted."""
    from openai import OpenAI

    api = OpenAI(base_url=server + "/v1", api_key=KEY)

    def ask(messages):
        done = api.chat.completions.create(model=tiny_dir.name, messages=messages, max_tokens=8, temperature=0)
        return done.choices[0].message.content, done.usage.prompt_tokens

    plain = ask([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello\nthere"}])
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "there"}]
    sent = [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "name": "ann", "content": parts}]  # fmt: skip
    assert ask(sent) == plain
    assert ask([{"role": "user", "content": "hello there"}]) != plain  # the system turn and the newline count


def test_penalties_and_logit_bias_through_the_openai_client_equal_local(server, tiny_dir, capsys, monkeypatch):
    from openai import OpenAI

    api = OpenAI(base_url=server + "/v1", api_key=KEY)
    asked = {"frequency_penalty": 1.2, "presence_penalty": 0.6, "logit_bias": {"7": 3.0, "12": -100}}
    done = api.completions.create(model=tiny_dir.name, prompt="The capital", max_tokens=10, temperature=0, **asked)
    args = ["The capital", "--raw", "--greedy", "-n", "10", "--frequency-penalty", "1.2", "--presence-penalty", "0.6"]
    args += ["--logit-bias", "7=3", "--logit-bias", "12=-100", "--dtype", "float32", "--json"]
    run = run_cli(["generate", "-m", str(tiny_dir), *args], capsys, monkeypatch)
    [local] = run.json()["outputs"]
    assert done.choices[0].text == local["text"] and 12 not in local["token_ids"]
    assert done.usage.completion_tokens == len(local["token_ids"])


def test_streamed_logprobs_equal_the_answers_and_n_choices_stream_side_by_side(server, tiny_dir):
    from openai import OpenAI

    api = OpenAI(base_url=server + "/v1", api_key=KEY)
    ask = {"model": tiny_dir.name, "prompt": "The capital", "max_tokens": 8, "temperature": 0, "logprobs": 2}
    whole = api.completions.create(**ask).choices[0].logprobs
    chunks = [c for c in api.completions.create(**ask, stream=True) if c.choices]
    streamed = [c.choices[0].logprobs for c in chunks if c.choices[0].logprobs]
    assert sum((s.tokens for s in streamed), []) == whole.tokens
    assert sum((s.token_logprobs for s in streamed), []) == pytest.approx(whole.token_logprobs, abs=1e-5)
    chat = {"model": tiny_dir.name, "messages": [HI], "max_tokens": 8, "temperature": 0, "logprobs": True,
            "top_logprobs": 2}  # fmt: skip
    said = api.chat.completions.create(**chat).choices[0].logprobs.content
    pieces = [c.choices[0].logprobs for c in api.chat.completions.create(**chat, stream=True) if c.choices]
    got = [e for p in pieces if p and p.content for e in p.content]
    assert [e.token for e in got] == [e.token for e in said] and all(len(e.top_logprobs) == 2 for e in got)
    sampled = {"model": tiny_dir.name, "prompt": "The capital", "max_tokens": 8, "temperature": 0.9, "seed": 11}
    texts = {0: "", 1: "", 2: ""}
    for piece in api.completions.create(**sampled, n=3, stream=True):
        for choice in piece.choices:
            texts[choice.index] += choice.text
    for index in range(3):  # choice i is the request under seed + i
        alone = api.completions.create(**{**sampled, "seed": 11 + index}).choices[0].text
        assert texts[index] == alone


def test_echo_and_a_streams_usage(server, tiny_dir):
    from openai import OpenAI

    api = OpenAI(base_url=server + "/v1", api_key=KEY)
    ask = {"model": tiny_dir.name, "prompt": "The capital", "max_tokens": 6, "temperature": 0}
    plain = api.completions.create(**ask)
    echoed = api.completions.create(**ask, echo=True)
    assert echoed.choices[0].text == "The capital" + plain.choices[0].text and echoed.usage == plain.usage
    chunks = list(api.completions.create(**ask, echo=True, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == echoed.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])
    chat = {"model": tiny_dir.name, "messages": [HI], "max_tokens": 6, "temperature": 0}
    whole = api.chat.completions.create(**chat)
    pieces = list(api.chat.completions.create(**chat, stream=True, stream_options={"include_usage": True}))
    assert pieces[-1].usage == whole.usage and pieces[-1].choices == []
    quiet = list(api.chat.completions.create(**chat, stream=True, stream_options={"include_usage": False}))
    assert all(c.usage is None for c in quiet) and len(quiet) == len(pieces) - 1


def test_a_template_that_renders_no_tools_is_a_400_naming_why(tiny_dir, tmp_path):
    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:")
    proc, url = start_server(tiny_dir, "--chat-template", str(plain), "--dtype", "float32")
    try:
        said = post(url, "/v1/chat/completions", {"messages": [HI], "max_tokens": 3, "temperature": 0}).json()
        assert said["choices"][0]["finish_reason"] in ("stop", "length")  # the file's template, without tools
        refused = post(url, "/v1/chat/completions", {"messages": [HI], "tools": [ADD]})
        assert refused.status_code == 400 and "cannot take tools" in refused.json()["error"]["message"]
        assert httpx.get(url + "/llmcli/v1/ps", headers=auth()).json()["models"][0]["tool_parser"] is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def auth():
    return {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def test_a_client_that_leaves_frees_its_slot(server, tiny_dir):
    body = {"prompt": "a long one", "max_tokens": 64, "ignore_eos": True, "stream": True, "model": tiny_dir.name}
    with httpx.stream("POST", server + "/v1/completions", json=body, headers=auth(), timeout=60) as response:
        for index, _line in enumerate(response.iter_lines()):
            if index > 3:
                break
    after = post(server, "/v1/completions", {"prompt": "next", "max_tokens": 4, "temperature": 0})
    assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] >= 1


def test_sigterm_finishes_the_request_in_flight_then_exits_0(tiny_dir):
    proc, url = start_server(tiny_dir, "--queue-size", "1")
    body = {"prompt": "go", "max_tokens": 200, "ignore_eos": True, "temperature": 0}
    results = {}
    worker = threading.Thread(target=lambda: results.update(r=post(url, "/v1/completions", body)))
    worker.start()
    while httpx.get(url + "/health").json()["in_flight"] == 0:  # wait until it runs
        assert worker.is_alive()
    busy = post(url, "/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    proc.send_signal(signal.SIGTERM)
    worker.join(timeout=60)
    assert results["r"].status_code == 200, results["r"].text
    assert results["r"].json()["usage"]["completion_tokens"] > 100  # ran to its end, not cut by the shutdown
    assert proc.wait(timeout=60) == 0


def test_binding_beyond_loopback_needs_a_key(capsys, monkeypatch):
    monkeypatch.delenv("LLMCLI_API_KEY", raising=False)
    run = run_cli(["serve", "--host", "0.0.0.0"], capsys, monkeypatch)
    assert_clean_error(run, 2, "--host 0.0.0.0", "--api-key")


def test_options_that_configure_a_local_load_do_not_travel(capsys, monkeypatch):
    run = run_cli(["generate", "--server", "http://127.0.0.1:9", "--dtype", "float32", "hi"], capsys, monkeypatch)
    assert_clean_error(run, 2, "--dtype configures a model loaded here")
    gone = run_cli(["generate", "--server", "http://127.0.0.1:9", "hi"], capsys, monkeypatch)
    assert_clean_error(gone, 1, "cannot reach the server")
    assert os.environ.get("LLMCLI_SERVER") is None


def test_tokenize_score_next_token_and_chat_through_the_server_match_local(server, tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("LLMCLI_API_KEY", KEY)
    remote = ["--server", server, "-m", tiny_dir.name]

    def both(args, stdin=None):
        far = run_cli([*args, *remote], capsys, monkeypatch, stdin=stdin)
        near = run_cli([*args, "-m", str(tiny_dir)], capsys, monkeypatch, stdin=stdin)
        assert far.code == near.code == 0, far.stderr + near.stderr
        return far, near

    far, near = both(["tokenize", "héllo wörld", "--json"])
    assert far.json() == near.json()
    far, near = both(["score", "the quick brown fox", "--json"])
    assert far.json()["token_ids"] == near.json()["token_ids"]
    pairs = zip(far.json()["tokens"][1:], near.json()["tokens"][1:], strict=True)
    assert all(abs(a["logprob"] - b["logprob"]) < 0.02 for a, b in pairs)
    windows = ["--window", "8", "--stride", "4", "--json"]
    far, near = both(["score", "the quick brown fox jumps over the lazy dog again and again", *windows])
    spans = [[(w["begin"], w["end"], w["scored"]) for w in run.json()["windows"]] for run in (far, near)]
    assert spans[0] == spans[1] and far.json()["scored_tokens"] > 8 and len(spans[0]) > 2
    assert abs(far.json()["mean_nll"] - near.json()["mean_nll"]) < 0.02  # the server's model is bf16
    far, near = both(["next-token", "the quick", "--top", "5", "--top-k", "3", "--json"])
    assert [c["token_id"] for c in far.json()["candidates"]] == [c["token_id"] for c in near.json()["candidates"]]
    assert far.json()["kept_tokens"] == near.json()["kept_tokens"] == 3
    far, near = both(["chat", "--greedy", "-n", "8"], stdin=b"hello there\nand again\n")
    assert far.stdout == near.stdout and far.stdout.count("\n") >= 2  # two answers, each ended by a newline


def test_a_per_user_socket_ps_and_keep_alive(tiny_dir, capsys, monkeypatch):
    proc, where = start_server(tiny_dir, "--local", "--keep-alive", "1s", "--dtype", "float32", key=None)
    try:
        from llmcli.client import local_socket

        assert where == f"unix:{local_socket()}" and os.stat(local_socket()).st_mode & 0o777 == 0o600
        answered = run_cli(["generate", "--server", "local", "hi", "--greedy", "-n", "4"], capsys, monkeypatch)
        assert answered.code == 0 and answered.stdout
        status = lambda: run_cli(["ps", "--server", "local", "--json"], capsys, monkeypatch).json()["models"][0]  # noqa: E731
        deadline = time.monotonic() + 20
        while status()["loaded"]:
            assert time.monotonic() < deadline, "keep-alive did not unload the idle model"
            time.sleep(0.3)
        # the first request after the unload is a forward pass, which reloads the model on the engine thread
        # (whose prepacking once waited on that same thread for ever)
        with httpx.Client(transport=httpx.HTTPTransport(uds=local_socket()), timeout=60) as client:
            probe = client.post("http://local/llmcli/v1/next-token", json={"model": tiny_dir.name, "prompt": "hi"})
        assert probe.status_code == 200 and probe.json()["candidates"], probe.text
        assert status()["loads"] == 2
        again = run_cli(["generate", "--server", "local", "hi", "--greedy", "-n", "4"], capsys, monkeypatch)
        assert again.stdout == answered.stdout
        assert status()["loads"] == 2
        # float32 on the CPU: prepacked, the originals released but for the output layer tied to the embeddings
        assert status()["prepacked_bytes"] > 0 and status()["weights_bytes"] > 0
        assert status()["split_lone_rows"] is False  # oneDNN's kernel for a lone row too (it measured faster)
        shown = run_cli(["ps", "--server", "local"], capsys, monkeypatch)
        assert tiny_dir.name in shown.stdout and "requests in flight" in shown.stdout and "prepacked" in shown.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert not os.path.exists(local_socket())


def test_a_batch_job_killed_midway_resumes_with_nothing_lost_or_twice(server, tiny_dir, tmp_path):
    from tests.client.test_jobs import killed_and_resumed

    records = killed_and_resumed(
        server, tmp_path, model=tiny_dir.name, count=40, kill_after=6, env=cli_env(LLMCLI_API_KEY=KEY)
    )
    assert all(r["outputs"][0]["token_ids"] for r in records)


def test_a_stream_left_at_once_frees_its_slot(server, tiny_dir):
    body = {"prompt": "x", "max_tokens": 64, "ignore_eos": True, "stream": True, "model": tiny_dir.name}
    for _ in range(3):
        with httpx.stream("POST", server + "/v1/completions", json=body, headers=auth(), timeout=60):
            pass  # headers read, body never
    deadline = time.monotonic() + 30
    while httpx.get(server + "/health").json()["in_flight"]:
        assert time.monotonic() < deadline, "a slot stayed taken"
        time.sleep(0.1)


def test_structured_output_travels_to_the_server(server, tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("LLMCLI_API_KEY", KEY)
    pattern = r"[0-9]{3}-[a-z]{2,4}"
    for flags in (["--regex", pattern, "-t", "1", "--seed", "3"], ["--json-object", "-n", "2", "--greedy"]):
        args = ["generate", "hi", *flags, "--json"]
        far = run_cli([*args, "--server", server, "-m", tiny_dir.name], capsys, monkeypatch)
        near = run_cli([*args, "-m", str(tiny_dir)], capsys, monkeypatch)
        assert far.code == near.code and far.json()["outputs"] == near.json()["outputs"], far.stderr
        assert far.json()["constraint"] == near.json()["constraint"]
    assert far.code == 1 and "do not satisfy --json-object: cut short" in far.stderr  # -n 2 cannot close it
    from openai import OpenAI

    api = OpenAI(base_url=server + "/v1", api_key=KEY)
    messages = [{"role": "user", "content": "a JSON object please"}]
    done = api.chat.completions.create(
        model=tiny_dir.name, messages=messages, max_tokens=60, seed=1, response_format={"type": "json_object"}
    )
    text = done.choices[0].message.content
    assert done.choices[0].finish_reason == "length" or isinstance(json.loads(text), dict)
    assert text.lstrip().startswith("{")


def test_a_socket_that_cannot_be_made_is_one_line_before_loading(capsys, monkeypatch):
    run = run_cli(["serve", "--socket", "/proc/no/such.sock"], capsys, monkeypatch)
    assert_clean_error(run, 1, "/proc/no/such.sock", "cannot make the socket's folder")
    both = run_cli(["serve", "--socket", "/tmp/x.sock", "--local"], capsys, monkeypatch)
    assert_clean_error(both, 2, "--socket and --local")


@pytest.mark.parametrize("flag", ["--no-prepack", "--batch-invariant"])
def test_no_prepack_keeps_torchs_own_linear_kernel_and_batch_invariant_keeps_lone_rows_whole(tiny_dir, flag):
    proc, url = start_server(tiny_dir, flag, "--dtype", "float32")
    try:
        answer = post(url, "/v1/completions", {"model": tiny_dir.name, "prompt": "hi", "max_tokens": 3})
        assert answer.status_code == 200, answer.text
        ps = httpx.get(url + "/llmcli/v1/ps", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).json()
        [model] = ps["models"]
        assert model["loaded"] and model["split_lone_rows"] is False  # a lone row computes as a batched one
        # the default server prepacks (the ps test); --batch-invariant keeps oneDNN's row-invariant kernel
        assert (model["prepacked_bytes"] == 0) is (flag == "--no-prepack")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
