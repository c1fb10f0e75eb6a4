"""What clients written for `transformers serve` expect of llmcli serve: `transformers chat` first POSTs
/load_model (loading progress as server-sent events, ending in {"status": "ready"}) and then sends its chat
completions with a `generation_config` field, a GenerationConfig as a JSON string. Its fields go through
llmcli's flag table like every other request's; a field the table lacks is refused by name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from llmcli.flags import BY_KEY
from llmcli.server.api_error import ApiError

NOT_SETTINGS = {"transformers_version", "_from_model_config"}  # GenerationConfig's bookkeeping, no setting
RENAMED = {"stop_strings": "stop"}  # GenerationConfig's name → the flag table's


def _checked(key: str, value: Any) -> Any:
    kind = BY_KEY[key].type
    if key == "stop":
        value = [value] if isinstance(value, str) else value
        ok = isinstance(value, list) and all(isinstance(s, str) and s for s in value)
    elif kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:  # early_stopping: true, false or "never"
        ok = isinstance(value, bool) or value == "never"
        value = str(value).lower() if isinstance(value, bool) else value
    if not ok:
        raise ApiError(400, f"generation_config: '{key}' has the wrong type ({value!r})", param="generation_config")
    return kind(value) if kind in (int, float) else value


def generation_config_flags(value: Any) -> dict[str, Any]:
    """transformers chat's `generation_config` (a JSON string or an object) as flag-table keys."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(400, "generation_config is not valid JSON", param="generation_config") from None
    if not isinstance(value, dict):
        raise ApiError(400, "generation_config must be a GenerationConfig as a JSON object", param="generation_config")
    settings = {RENAMED.get(k, k): v for k, v in value.items() if k not in NOT_SETTINGS and v is not None}
    unknown = sorted(k for k in settings if k not in BY_KEY)
    if unknown:
        raise ApiError(
            400,
            f"generation_config: {', '.join(unknown)} cannot be honoured by llmcli serve (it takes the settings of "
            "llmcli's decoding flags: max_new_tokens, temperature, top_k, top_p, do_sample, stop_strings, ...)",
            param="generation_config",
        )
    return {key: _checked(key, v) for key, v in settings.items()}


async def load_model_events(server: Any, body: Any) -> AsyncIterator[str]:
    """/load_model's events: a served model is ready (loaded again first if --keep-alive let it go); any other
    name is an error event naming the models served here."""
    name = body.get("model") if isinstance(body, dict) else None
    if not isinstance(name, str) or name not in server.models:
        served = ", ".join(server.models)
        yield json.dumps({"status": "error", "message": f"the model '{name}' is not served here (served: {served})"})
        return
    model = server.models[name]
    cached = model.loaded is not None
    if not cached:
        yield json.dumps({"status": "loading", "stage": "weights", "model": name})
        await server.off_loop(model.acquire)
    yield json.dumps({"status": "ready", "cached": cached, "model": name})
