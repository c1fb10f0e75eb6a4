"""Results as OpenAI's answers: completions and chat completions whole, their stream's chunks, the usage, and
llmcli's own `batch` block (whether a request shared its forward passes)."""

from __future__ import annotations

from typing import Any

from llmcli.server.protocol import Job
from llmcli.server.tool_calls import read_calls

FINISH = {"stop": "stop", "stop_string": "stop", "length": "length"}


def completion_body(job: Job, results: list[Any], model: str) -> dict[str, Any]:
    choices, index = [], 0
    for result in results:
        for out in result.outputs:
            text = result.prompt + out.text if job.echo else out.text
            choice = {"index": index, "text": text, "finish_reason": FINISH[out.finish_reason], "logprobs": None}
            if out.logprobs is not None:
                choice["logprobs"] = _completion_logprobs(out.logprobs)
            choices.append(choice)
            index += 1
    return _envelope(job, "text_completion", model, choices, results)


def chat_body(job: Job, results: list[Any], model: str) -> dict[str, Any]:
    choices = []
    for index, out in enumerate(results[0].outputs):
        message, finish = assistant_message(job, out.text), FINISH[out.finish_reason]
        choice = {
            "index": index,
            "message": message,
            "finish_reason": "tool_calls" if message.get("tool_calls") else finish,
            "logprobs": None,
        }
        if out.logprobs is not None:
            choice["logprobs"] = {"content": [_chat_logprob(t) for t in out.logprobs]}
        choices.append(choice)
    return _envelope(job, "chat.completion", model, choices, results)


def _completion_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tokens": [t["token"] for t in entries],
        "token_logprobs": [t["logprob"] for t in entries],
        "top_logprobs": [{a["token"]: a["logprob"] for a in t["top"]} for t in entries],
    }


def assistant_message(job: Job, text: str) -> dict[str, Any]:
    """The answer as OpenAI's assistant message: its content, and the tool calls read out of it."""
    if job.tools is None:
        return {"role": "assistant", "content": text}
    content, calls = read_calls(text, job.tools, job.tool_parser)
    return {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}


def _chat_logprob(entry: dict[str, Any]) -> dict[str, Any]:
    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {
        **one(entry["token"], entry["logprob"]),
        "top_logprobs": [one(a["token"], a["logprob"]) for a in entry["top"]],
    }


def _envelope(job: Job, kind: str, model: str, choices: list[Any], results: list[Any]) -> dict[str, Any]:
    return {
        "id": f"{'chatcmpl' if job.chat else 'cmpl'}-{job.id}",
        "object": kind,
        "created": job.created,
        "model": model,
        "choices": choices,
        "usage": usage(results),
        "batch": batch_info(results),
    }


def usage(results: list[Any]) -> dict[str, int]:
    prompt_tokens = sum(len(r.prompt_token_ids) for r in results)
    completion_tokens = sum(len(o.token_ids) for r in results for o in r.outputs)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def batch_info(results: list[Any]) -> dict[str, Any]:
    """llmcli's addition: whether the request shared its forward passes with others, and with how many at
    most and on average (itself included), so that a client can tell a batched answer from a solo one."""
    if not results:
        return {"shared": False, "rows_max": 1, "rows_mean": 1.0}
    stats = results[0].stats
    rows_max = stats.requests_in_batch
    rows_mean = stats.batch_rows_mean if stats.batch_rows_mean is not None else float(rows_max)
    return {"shared": rows_max > 1, "rows_max": rows_max, "rows_mean": rows_mean}


def chunk(
    job: Job,
    model: str,
    *,
    text: str | None = None,
    finish: str | None = None,
    role: bool = False,
    batch: Any = None,
    index: int = 0,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict:
    """One server-sent event of a stream: a piece of text (with its tokens' log-probabilities when asked
    for), the role (chat's first event) or the finish reason (with the batch it ran in), of choice `index`."""
    if job.chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else ({"content": text} if text is not None else {})
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = {"content": [_chat_logprob(t) for t in logprobs]}
    else:
        choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
        if logprobs is not None:
            choice["logprobs"] = _completion_logprobs(logprobs)
    body = _chunk_envelope(job, model, [choice])
    if batch is not None:
        body["batch"] = batch
    return body


def tool_chunks(job: Job, model: str, rest: str, calls: list[dict[str, Any]]) -> list[dict]:
    """The end of a stream with tools: the text held back that held no call, then each call as OpenAI's
    `tool_calls` delta (its index, id, name and whole arguments in one piece)."""
    pieces = [chunk(job, model, text=rest)] if rest else []
    for index, call in enumerate(calls):
        delta = {"tool_calls": [{"index": index, **call}]}
        pieces.append(_chunk_envelope(job, model, [{"index": 0, "delta": delta, "finish_reason": None}]))
    return pieces


def usage_chunk(job: Job, model: str, results: list[Any]) -> dict:
    """stream_options.include_usage: the stream's last chunk, no choices, the usage of the whole request."""
    return {**_chunk_envelope(job, model, []), "usage": usage(results)}


def _chunk_envelope(job: Job, model: str, choices: list[Any]) -> dict:
    kind = "chat.completion.chunk" if job.chat else "text_completion"
    prefix = "chatcmpl" if job.chat else "cmpl"
    return {"id": f"{prefix}-{job.id}", "object": kind, "created": job.created, "model": model, "choices": choices}
