"""Which engine answers at a --server URL: llmcli serve, vLLM, llama-cpp-python's server, or another
OpenAI-compatible server (llama.cpp's llama-server, ollama, mlx_lm.server, `transformers serve`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LLMCLI, VLLM, LLAMA_CPP_PY, OPENAI = "llmcli", "vllm", "llama-cpp-python", "openai"
LABELS = {
    LLMCLI: "llmcli serve",
    VLLM: "vLLM",
    LLAMA_CPP_PY: "llama-cpp-python's server",
    OPENAI: "an OpenAI-compatible server",
}
LLAMA_CPP_TITLE = "llama.cpp Python API"  # its FastAPI app's title, in /openapi.json


@dataclass
class Engine:
    kind: str
    version: str | None = None
    models: list[str] = field(default_factory=list)
    ignores: dict[str, str] = field(default_factory=dict)  # request field → what showed it (foreign.memory)

    @property
    def label(self) -> str:
        return LABELS[self.kind] + (f" {self.version}" if self.version else "")


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def detect(http: Any, base: str) -> Engine:
    """llmcli's /health names its queue; vLLM answers /version; llama-cpp-python's server names itself in
    /openapi.json; anything else is known by /v1/models alone."""
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
    spec = http.get(base + "/openapi.json")
    described = _json(spec) if spec.status_code == 200 else None
    info = described.get("info") if isinstance(described, dict) else None
    if isinstance(info, dict) and LLAMA_CPP_TITLE in str(info.get("title")):
        return Engine(LLAMA_CPP_PY, version=str(info.get("version") or "") or None, models=models)
    return Engine(OPENAI, models=models)
