"""One choice of a streamed OpenAI answer: its engine events (text, token log-probabilities, the end) as the
chunks OpenAI sends, with the choice's index. Log-probabilities wait for the text their tokens produce and go
out with it; tool calls are held back and sent whole at the end (server.tool_calls.ContentFilter)."""

from __future__ import annotations

from typing import Any

from llmcli.server.answers import FINISH, assistant_message, batch_info, chunk, tool_chunks
from llmcli.server.tool_calls import ContentFilter


class ChoiceStream:
    def __init__(self, job: Any, model: str, index: int):
        self.job, self.model, self.index = job, model, index
        self.held = ContentFilter(job.tools, job.tool_parser) if job.tools is not None else None
        self.logprobs: list[dict[str, Any]] = []  # entries of tokens whose text has not gone out yet
        self.results: list[Any] = []

    def opening(self) -> list[dict]:
        if self.job.chat:
            return [chunk(self.job, self.model, role=True, index=self.index)]
        if self.job.echo:
            return [chunk(self.job, self.model, text=self.job.prompts[0], index=self.index)]
        return []

    def on(self, event: Any) -> list[dict]:
        from llmcli.engine.generate.generation import Finished, TextDelta, TokenLogprobs

        if isinstance(event, TokenLogprobs):
            self.logprobs += event.entries
            return []
        if isinstance(event, TextDelta) and event.text:
            text = self.held.feed(event.text) if self.held is not None else event.text
            return [self._text(text)] if text else []
        if isinstance(event, Finished):
            self.results = event.results
            return self._end(event.results)
        return []

    def _text(self, text: str) -> dict:
        entries, self.logprobs = self.logprobs, []
        logprobs = entries if self.job.logprobs is not None else None
        return chunk(self.job, self.model, text=text, index=self.index, logprobs=logprobs)

    def _end(self, results: list[Any]) -> list[dict]:
        out = results[0].outputs[0] if results else None
        reason = FINISH[out.finish_reason] if out is not None else "length"
        pieces = []
        if self.held is not None and out is not None:
            message = assistant_message(self.job, out.text)
            calls = message.get("tool_calls") or []
            rest = self.held.rest(message.get("content"), has_calls=bool(calls))
            pieces += tool_chunks(self.job, self.model, rest, calls)
            reason = "tool_calls" if calls else reason
        if self.logprobs and self.job.logprobs is not None:  # tokens that produced no visible text
            pieces.append(self._text(""))
        pieces.append(chunk(self.job, self.model, finish=reason, batch=batch_info(results), index=self.index))
        return pieces
