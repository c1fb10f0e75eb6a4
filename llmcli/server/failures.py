"""Unexpected errors inside serve: each logged once on the server's stderr with its request id and traceback,
and counted for `llmcli ps`. The client gets OpenAI's error JSON with the id and no traceback or path, so that
a user's report can be matched to the log line."""

from __future__ import annotations

import sys
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

REQUEST_ID = "x-request-id"


def request_id(headers: dict[str, str] | None = None) -> str:
    """The client's X-Request-Id when it sent a usable one (as vLLM honours it), else a new one."""
    given = (headers or {}).get(REQUEST_ID, "")
    return given if given.isprintable() and 0 < len(given) <= 128 else f"req_{uuid.uuid4().hex[:20]}"


@dataclass
class Failures:
    count: int = 0

    def log(self, exc: BaseException, request: Any, *, streaming: bool = False) -> tuple[str, str]:
        """Log `exc` once on stderr under the request's id; the id, and the one line a client may see."""
        self.count += 1
        rid = request_id(dict(request.headers))
        where = f"{request.method} {request.url.path}" + (", streaming" if streaming else "")
        trace = "".join(traceback.format_exception(exc))
        sys.stderr.write(f"llmcli serve: request {rid} ({where}) failed: {type(exc).__name__}: {exc}\n{trace}")
        sys.stderr.flush()
        return rid, f"internal error (request {rid}; the server's log has the details)"
