"""Which engine answers at a --server URL: llmcli serve, vLLM, or another OpenAI-compatible server
(llama.cpp's llama-server, ollama, mlx_lm.server, `transformers serve`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LLMCLI, VLLM, OPENAI = "llmcli", "vllm", "openai"
LABELS = {LLMCLI: "llmcli serve", VLLM: "vLLM", OPENAI: "an OpenAI-compatible server"}


@dataclass
class Engine:
    kind: str
    version: str | None = None
    models: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.kind] + (f" {self.version}" if self.version else "")


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def detect(http: Any, base: str) -> Engine:
    """llmcli's /health names its queue; vLLM answers /version; anything else is asked only /v1/models."""
    health = _json(http.get(base + "/health"))
    if isinstance(health, dict) and "in_flight" in health:
        return Engine(LLMCLI, models=list(health.get("models") or []))
    version = http.get(base + "/version")
    found = _json(version) if version.status_code == 200 else None
    listed = http.get(base + "/v1/models")
    data = _json(listed) if listed.status_code == 200 else None
    models = [m.get("id") for m in (data or {}).get("data", []) if isinstance(m, dict)]
    if isinstance(found, dict) and "version" in found:
        return Engine(VLLM, version=str(found["version"]), models=models)
    return Engine(OPENAI, models=models)
