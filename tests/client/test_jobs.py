"""--server in front of other engines (the flag × engine table) and batch jobs that survive a kill: pure
parts here, the real engines in test_vllm.py and test_serve.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from llmcli.errors import LlmcliError, UsageError
from llmcli.foreign.detect import OPENAI, VLLM, Engine
from llmcli.foreign.requests import generate_request
from llmcli.jobs import JobSpec, answered, start_index, with_retries
from tests.helpers import ROOT, cli_env

VLLM_ENGINE = Engine(VLLM, "0.32.0", ["m"])
PLAIN = Engine(OPENAI, None, ["m"])


def request(engine, flags, **body):
    return generate_request(engine, {"model": "m", "flags": flags, **body}, "hi", None)


def test_flags_travel_as_each_engine_names_them():
    flags = {"max_new_tokens": 5, "min_new_tokens": 2, "top_k": 3, "min_p": 0.1, "repetition_penalty": 1.1,
             "temperature": 0.7, "stop": ["\n"], "num_return_sequences": 2}  # fmt: skip
    path, body = request(VLLM_ENGINE, flags, seed=4, raw=True, logprobs=2)
    assert path == "/v1/completions" and body["prompt"] == "hi"
    assert body | {} == {"model": "m", "max_tokens": 5, "min_tokens": 2, "top_k": 3, "min_p": 0.1,
                         "repetition_penalty": 1.1, "temperature": 0.7, "stop": ["\n"], "n": 2, "seed": 4,
                         "prompt": "hi", "logprobs": 2, "return_token_ids": True,
                         "return_tokens_as_token_ids": True}  # fmt: skip
    json_schema = {"kind": "json_schema", "source": '{"type": "object"}'}
    assert request(VLLM_ENGINE, {}, constraint=json_schema)[1]["structured_outputs"] == {"json": {"type": "object"}}
    shaped = request(PLAIN, {}, constraint=json_schema)[1]["response_format"]
    assert shaped == {"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}}
    path, body = request(PLAIN, {"do_sample": False, "max_new_tokens": 3}, system="be brief")
    assert path == "/v1/chat/completions" and body["temperature"] == 0 and body["max_tokens"] == 3
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_penalties_and_logit_bias_travel_in_openais_shape_and_a_banned_token_coming_back_is_caught():
    from llmcli.foreign.checks import findings

    flags = {"frequency_penalty": 0.5, "presence_penalty": -0.5, "logit_bias": ["7=-100", "9=2", "7=-100"]}
    for engine in (VLLM_ENGINE, PLAIN):
        body = request(engine, flags, raw=True)[1]
        assert body["frequency_penalty"] == 0.5 and body["presence_penalty"] == -0.5
        assert body["logit_bias"] == {"7": -100.0, "9": 2.0}
    asked = request(VLLM_ENGINE, flags, raw=True)[1]
    obeyed = {"choices": [{"text": "ab", "token_ids": [9, 3]}]}
    ignored = {"choices": [{"text": "ab", "token_ids": [3, 7]}]}
    assert findings(asked, obeyed) == []
    [found] = findings(asked, ignored)
    assert found.message("vLLM 0.32.0") == (
        "vLLM 0.32.0 returned the token 7, which logit_bias -100 bans: it ignores logit_bias (--logit-bias)"
    )


@pytest.mark.parametrize(
    "engine,flags,extra,needle",
    [
        (VLLM_ENGINE, {"typical_p": 0.5}, {}, "--typical-p cannot travel to vLLM 0.32.0"),
        (VLLM_ENGINE, {"num_beams": 4}, {}, "--num-beams cannot travel to vLLM"),
        (VLLM_ENGINE, {"no_repeat_ngram_size": 3}, {}, "--no-repeat-ngram-size cannot travel"),
        (VLLM_ENGINE, {}, {"set": ["epsilon_cutoff=0.1"]}, "--set configures transformers' generate()"),
        (PLAIN, {"top_k": 5}, {}, "--top-k cannot travel to an OpenAI-compatible server"),
        (PLAIN, {}, {"logprobs": 2}, "--logprobs needs token ids"),
        (PLAIN, {}, {"constraint": {"kind": "regex", "source": "a+"}}, "--regex cannot travel"),
    ],
)
def test_a_flag_an_engine_cannot_honour_is_refused_by_name(engine, flags, extra, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        request(engine, flags, **extra)


def test_resume_checks_the_prefix_and_cuts_a_partial_line(tmp_path):
    prompts = ["a", "b", "c"]
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"prompt": "a"}) + "\n" + '{"prompt": "b", "outp')
    assert start_index(JobSpec(out, resume=True), prompts) == 1
    assert out.read_text() == json.dumps({"prompt": "a"}) + "\n"
    with pytest.raises(UsageError, match="--resume continues"):
        start_index(JobSpec(out), prompts)
    out.write_text(json.dumps({"prompt": "z"}) + "\n")
    with pytest.raises(LlmcliError, match="line 1 answers another prompt"):
        answered(out, prompts)


def test_busy_and_unreachable_servers_are_retried_other_errors_are_not():
    calls, naps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            error = LlmcliError("HTTP 503: busy")
            error.retryable, error.retry_after = True, (2.0 if len(calls) == 1 else None)
            raise error
        return {"ok": True}

    assert with_retries(flaky, sleep=naps.append) == {"ok": True} and naps == [2.0, 1.0]
    with pytest.raises(UsageError):
        with_retries(lambda: (_ for _ in ()).throw(UsageError("bad flag")), sleep=naps.append)


def killed_and_resumed(server: str, tmp_path, *, model: str, count: int, kill_after: int, env=None) -> list[dict]:
    """A job killed with SIGKILL once `kill_after` answers are on disk, then resumed; the final records."""
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say the number {i}."}) + "\n" for i in range(count)))
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "llmcli", "generate", "--server", server, "-m", model, "--prompts", str(prompts),
            "--greedy", "-n", "12", "--output", str(out), "--concurrency", "3"]  # fmt: skip
    proc = subprocess.Popen(args, env=env or cli_env(), cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not out.exists() or out.read_text().count("\n") < kill_after:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = out.read_text().splitlines()
    assert kill_after <= len(before) < count, "the job ended before it could be killed"
    resumed = subprocess.run([*args, "--resume"], env=env or cli_env(), cwd=ROOT, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    after = out.read_text().splitlines()
    assert after[: len(before)] == before  # nothing rewritten
    records = [json.loads(line) for line in after]
    assert [r["prompt"] for r in records] == [f"Say the number {i}." for i in range(count)]  # in order, once each
    return records
