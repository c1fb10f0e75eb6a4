"""generate, score and next-token through an OpenAI-compatible engine (vLLM above all), answering the same
records as a local run: the `generate --json` object, the score and next-token objects.

What the engine does not say is null (the model's dtype, the decode rate); stats are timed by the client.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from llmcli.errors import LlmcliError, UsageError
from llmcli.foreign.detect import VLLM, Engine
from llmcli.foreign.requests import generate_request, prompts_of
from llmcli.lines import iter_lines
from llmcli.plan import Constraint
from llmcli.scoring import check_scorable, score_data

PREFIX = "token_id:"


class Remote:
    """One server session: the httpx client, the base URL, the engine, and the texts of token ids seen."""

    def __init__(self, http: Any, base: str, server: str, engine: Engine, error: Callable[..., Exception]):
        self.http, self.base, self.server, self.engine, self.error = http, base, server, engine, error
        self.texts: dict[int, str] = {}
        self.constraint: dict[str, str] | None = None  # the body's structured output, checked on each answer

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(self.base + path, json=body)
        if response.status_code != 200:
            raise self.error(response.status_code, response.text, response.headers)
        return response.json()

    def model_info(self, model: str) -> dict[str, Any]:
        return {"path": model, "source": f"{self.engine.label} at {self.server}", "dtype": None, "device": "remote",
                "engine": self.engine.label}  # fmt: skip

    def replay(self) -> dict[str, Any]:
        """What can be said of another engine's environment: which engine, where, which version."""
        return {"engine": self.engine.label, "server": self.server, "version": self.engine.version}

    def token_text(self, model: str, token_id: int) -> str:
        """vLLM's /detokenize, once per id: its logprobs name tokens by id (return_tokens_as_token_ids)."""
        if token_id not in self.texts:
            self.texts[token_id] = self.post("/detokenize", {"model": model, "tokens": [token_id]})["prompt"]
        return self.texts[token_id]

    def entry(self, model: str, token: str, logprob: float) -> dict[str, Any]:
        token_id = int(token.removeprefix(PREFIX))
        return {"token_id": token_id, "token": self.token_text(model, token_id), "logprob": logprob}


# ---------------------------------------------------------------------------------------------- generate


def generate(remote: Remote, body: dict[str, Any], on_text: Callable[[str], None] | None) -> Iterator[dict]:
    """One request per prompt (or chat's one conversation); yields generate --json records, each answer
    checked against its request (foreign.checks)."""
    remote.constraint = body.get("constraint")
    for prompt in prompts_of(body):
        path, request = generate_request(remote.engine, body, prompt, body.get("messages"))
        started = time.perf_counter()
        several = int(request.get("n") or 1) > 1
        if several and "n" in remote.engine.ignores:
            answer, first = {"choices": [], "usage": {}}, None
        elif on_text is not None and not several:
            choices, usage, first = _streamed(remote, path, request, on_text)
            answer = {"choices": choices, "usage": usage}
        else:
            answer, first = remote.post(path, request), None
        answer, made_up = checked(remote, path, request, answer)
        record = _record(remote, request, prompt, answer, started=started, first=first)
        if made_up:
            record["compensated"] = made_up
        yield record


def checked(remote: Remote, path: str, request: dict, answer: dict) -> tuple[dict, list[dict[str, str]]]:
    """The answer, with the sequences an engine that ignores `n` left out made up for by one request each
    (seeds derived from --seed); any other field the engine dropped is exit 1 naming the flag and the engine,
    and remembered, so that the next call refuses it up front."""
    from llmcli.foreign.checks import FLAG_OF, findings
    from llmcli.foreign.memory import remember

    made_up = []
    if len(answer["choices"]) < int(request.get("n") or 1):
        if answer["choices"]:  # a first answer with fewer choices: the engine is caught ignoring n
            [finding] = [f for f in findings(request, answer) if f.field == "n"]
            remember(remote.server, remote.engine, "n", finding.evidence)
        answer, how = _one_request_each(remote, path, request, answer)
        made_up.append({"field": "n", "flag": FLAG_OF["n"], "how": how})
    for finding in findings(request, answer):
        remember(remote.server, remote.engine, finding.field, finding.evidence)
        raise LlmcliError(finding.message(remote.engine.label))
    return answer, made_up


def _one_request_each(remote: Remote, path: str, request: dict, answer: dict) -> tuple[dict, str]:
    asked = int(request["n"])
    choices, usage = list(answer["choices"]), dict(answer.get("usage") or {})
    single = {k: v for k, v in request.items() if k != "n"}
    seed, seeds, sent = request.get("seed"), [], 1 if choices else 0
    if seed is not None and choices:
        seeds.append(seed)
    while len(choices) < asked:
        extra = dict(single)
        if seed is not None:
            extra["seed"] = seed + len(choices)
            seeds.append(extra["seed"])
        got = remote.post(path, extra)
        sent += 1
        choices += got["choices"][:1]
        for key, value in (got.get("usage") or {}).items():
            if isinstance(value, int):
                usage[key] = usage.get(key, 0) + value if key == "completion_tokens" else value
    for index, choice in enumerate(choices):
        choice["index"] = index
    how = f"{asked} sequences from {sent} requests ({remote.engine.label} ignores n)"
    how += f", seeds {', '.join(map(str, seeds))}" if seeds else ", unseeded"
    return {**answer, "choices": choices, "usage": usage}, how


def _streamed(remote: Remote, path: str, request: dict, on_text: Callable[[str], None]) -> tuple[list, dict, float]:
    payload = {**request, "stream": True, "stream_options": {"include_usage": True}}
    choice: dict[str, Any] = {"text": "", "token_ids": [], "finish_reason": None, "stop_reason": None}
    usage: dict[str, Any] = {}
    first = None
    with remote.http.stream("POST", remote.base + path, json=payload) as response:
        if response.status_code != 200:
            raise remote.error(response.status_code, response.read().decode("utf-8", "replace"), response.headers)
        for line in iter_lines(response.iter_text()):
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            usage = event.get("usage") or usage
            for piece in event.get("choices") or []:
                text = piece.get("text") if "text" in piece else (piece.get("delta") or {}).get("content")
                if text:
                    first = first or time.perf_counter()
                    choice["text"] += text
                    on_text(text)
                choice["token_ids"] += piece.get("token_ids") or []
                choice["prompt_token_ids"] = choice.get("prompt_token_ids") or piece.get("prompt_token_ids")
                for key in ("finish_reason", "stop_reason"):
                    choice[key] = piece.get(key) or choice[key]
    return [choice], usage, first


def _finish(choice: dict[str, Any]) -> str:
    if choice.get("finish_reason") == "length":
        return "length"
    return "stop_string" if isinstance(choice.get("stop_reason"), str) else "stop"


def _output(remote: Remote, model: str, choice: dict[str, Any]) -> dict[str, Any]:
    message = choice.get("message")
    text = message.get("content") or "" if message else choice.get("text", "")
    out: dict[str, Any] = {"text": text, "token_ids": choice.get("token_ids") or [], "finish_reason": _finish(choice)}
    logprobs = choice.get("logprobs")
    if logprobs and "content" in logprobs:  # chat's shape
        out["logprobs"] = [
            {**remote.entry(model, step["token"], step["logprob"]),
             "top": [remote.entry(model, t["token"], t["logprob"]) for t in step.get("top_logprobs") or []]}
            for step in logprobs["content"] or []
        ]  # fmt: skip
    elif logprobs:  # completions' shape
        steps = zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"] or [], strict=False)
        out["logprobs"] = [
            {**remote.entry(model, token, value),
             "top": [remote.entry(model, t, v) for t, v in sorted((top or {}).items(), key=lambda kv: -kv[1])]}
            for token, value, top in steps
        ]  # fmt: skip
    return out


def valid(constraint: dict[str, str] | None, output: dict[str, Any]) -> bool | None:
    """The engine's output checked here as a local run checks it: complete, and for JSON parsed strictly and
    schema-checked, for a regex matched whole. A grammar cannot be checked without the grammar engine: None."""
    if constraint is None or constraint["kind"] == "grammar":
        return None
    if output["finish_reason"] == "length":
        return False
    if constraint["kind"] == "regex":
        return re.fullmatch(constraint["source"], output["text"]) is not None
    return Constraint(**constraint).accepts_document(output["text"])


def _record(remote: Remote, request: dict, prompt: str, answer: dict, *, started: float, first: float | None) -> dict:
    ended = time.perf_counter()
    model = request["model"]
    choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
    usage = answer.get("usage") or {}
    prompt_ids = answer.get("prompt_token_ids") or choices[0].get("prompt_token_ids") or []
    outputs = [_output(remote, model, c) for c in choices]
    for out in outputs:
        checked = valid(remote.constraint, out)
        if checked is not None:
            out["valid"] = checked
    generated = usage.get("completion_tokens", sum(len(o["token_ids"]) for o in outputs))
    stats = {
        "load_seconds": None,
        "prompt_tokens": usage.get("prompt_tokens", len(prompt_ids)),
        "time_to_first_token": round(first - started, 4) if first else None,
        "prefill_tokens_per_second": None,
        "decode_tokens_per_second": None,
        "generated_tokens": generated,
        "total_seconds": round(ended - started, 4),
        "peak_memory_bytes": None,
        "peak_memory_kind": "rss",
    }
    if first and generated > 1 and ended > first:
        stats["decode_tokens_per_second"] = round((generated - len(choices)) / (ended - first), 2)
    return {"model": remote.model_info(model), "prompt": prompt, "prompt_token_ids": prompt_ids,
            "generate_kwargs": request, "seed": request.get("seed"), "outputs": outputs, "stats": stats,
            "replay": remote.replay()}  # fmt: skip


# ---------------------------------------------------------------------------------------------- score, next-token


def needs_vllm(remote: Remote, what: str) -> None:
    if remote.engine.kind != VLLM:
        raise UsageError(f"{what} needs the prompt's log-probabilities, which {remote.engine.label} does not return")


def score(remote: Remote, model: str, text: str | list[int]) -> dict[str, Any]:
    """vLLM's prompt_logprobs: each token's log-probability given the ones before it (of a text, or of token
    ids sent as they are)."""
    needs_vllm(remote, "score")
    model = model or remote.engine.models[0]
    request = {"model": model, "prompt": text, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0,
               "return_token_ids": True}  # fmt: skip
    choice = remote.post("/v1/completions", request)["choices"][0]
    ids = choice["prompt_token_ids"]
    check_scorable(ids)
    tokens = [{"token_id": ids[0], "token": remote.token_text(model, ids[0]), "logprob": None}]
    for token_id, found in zip(ids[1:], choice["prompt_logprobs"][1:], strict=True):
        entry = found[str(token_id)]
        tokens.append({"token_id": token_id, "token": entry.get("decoded_token") or "", "logprob": entry["logprob"]})
    return {"model": remote.model_info(model), **score_data(tokens)}


def next_token(remote: Remote, model: str, prompt: str, *, top: int, chat: bool, system: str | None) -> dict:
    """The top candidates from vLLM's logprobs (raw, before any filter). The full distribution does not
    travel, so entropy and the vocabulary size are null, and sampling filters are refused by the caller."""
    needs_vllm(remote, "next-token")
    model = model or remote.engine.models[0]
    body = {"model": model, "flags": {"max_new_tokens": 1, "do_sample": False}, "logprobs": top, "raw": not chat,
            "system": system}  # fmt: skip
    path, request = generate_request(remote.engine, body, prompt, None)
    answer = remote.post(path, request)
    choice = answer["choices"][0]
    first = _output(remote, model, choice)["logprobs"][0]["top"][:top]
    rows, cumulative = [], 0.0
    for rank, entry in enumerate(first, 1):
        p = math.exp(entry["logprob"])
        cumulative += p
        rows.append({"rank": rank, "token_id": entry["token_id"], "token": entry["token"], "logit": None,
                     "prob": p, "cumulative": cumulative, "prob_after": p, "kept": True})  # fmt: skip
    prompt_ids = answer.get("prompt_token_ids") or choice.get("prompt_token_ids") or []
    return {"model": remote.model_info(model), "prompt": prompt, "prompt_token_ids": prompt_ids, "settings": {},
            "vocab_size": None, "entropy_bits": None, "entropy_bits_after": None, "kept_tokens": None,
            "candidates": rows}  # fmt: skip


def refuse(what: str, remote: Remote) -> LlmcliError:
    return UsageError(f"{what} through {remote.engine.label} is not supported; run it locally")
