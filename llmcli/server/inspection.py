"""llmcli's endpoints beside generate: next-token, score and tokenize. Each answers the object the command
prints with --json, computed by the same functions; forward passes run on the engine thread, in the queue."""

from __future__ import annotations

from typing import Any

from llmcli.errors import LlmcliError, UsageError
from llmcli.server.api_error import ApiError
from llmcli.server.protocol import parse_tool, usage_error

STRING, INTEGER = ((str,), "a string"), ((int,), "an integer")
BOOLEAN, OBJECT = ((bool,), "true or false"), ((dict,), "an object")
FIELDS = {
    "next-token": {"prompt": STRING, "flags": OBJECT, "top": INTEGER, "chat": BOOLEAN, "system": STRING},
    "score": {"text": STRING, "token_ids": ((list,), "a list of token ids"), "window": INTEGER, "stride": INTEGER},
    "tokenize": {"text": STRING, "chat": BOOLEAN, "system": STRING},
}
REQUIRED = {"next-token": ("prompt",), "score": ("text", "token_ids"), "tokenize": ("text",)}


async def answer(server: Any, endpoint: str, body: Any) -> dict[str, Any]:
    values = parse_tool(body, FIELDS[endpoint], required=REQUIRED[endpoint])
    served = server.model(values["model"])
    try:
        if endpoint == "tokenize":
            return await server.off_loop(lambda: _tokenize(served.acquire(), values))
        if endpoint == "next-token":
            settings = _sampling(values)
            return await server.on_engine(lambda: _next_token(served.acquire(), values, settings))
        from llmcli.analysis.perplexity import score_any
        from llmcli.analysis.probe import score_ids_record
        from llmcli.scoring import check_window

        window, stride = values["window"], values["stride"]
        check_window(window, stride, context=None)
        if values.get("token_ids") is not None:
            ids = _token_ids(values)
            return await server.on_engine(lambda: score_ids_record(served.acquire(), ids))
        return await server.on_engine(lambda: score_any(served.acquire(), values["text"], window=window, stride=stride))
    except UsageError as exc:
        raise usage_error(exc) from None
    except LlmcliError as exc:
        raise ApiError(400, exc.message) from None


def _token_ids(values: dict[str, Any]) -> list[int]:
    """score by token ids, as they are: one pass, no windows, no text beside them."""
    ids = values["token_ids"]
    if values.get("text") is not None or values.get("window") is not None or values.get("stride") is not None:
        raise ApiError(400, "'token_ids' is scored alone, in one pass: no text, window or stride", param="token_ids")
    if len(ids) < 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ApiError(400, "'token_ids' must be a list of at least two integers", param="token_ids")
    return ids


def _sampling(values: dict[str, Any]) -> dict[str, Any]:
    """next-token's filters, checked as the command checks them; `top` in range."""
    from llmcli.flags import SAMPLING_KEYS
    from llmcli.genargs import DecodingFlags, sampling_settings

    flags = values.get("flags") or {}
    bad = next((k for k in flags if k not in SAMPLING_KEYS), None)
    if bad is not None:
        raise ApiError(400, f"'{bad}' is not a sampling flag", param="flags")
    values["top"] = values.get("top") or 10
    if not 1 <= values["top"] <= 1000:
        raise ApiError(400, "'top' must be between 1 and 1000", param="top")
    return sampling_settings(DecodingFlags(**flags))


def _next_token(loaded: Any, values: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    from llmcli.analysis.probe import next_token_record

    chat, system = bool(values.get("chat")), values.get("system")
    return next_token_record(loaded, values["prompt"], chat=chat, system=system, settings=settings, top=values["top"])


def _tokenize(loaded: Any, values: dict[str, Any]) -> dict[str, Any]:
    from llmcli.engine.generate.tokens import token_table

    table = token_table(loaded.tokenizer, values["text"], chat=bool(values.get("chat")), system=values.get("system"))
    return {"model": str(loaded.source.path), **table, "tokenizer_class": type(loaded.tokenizer).__name__}
