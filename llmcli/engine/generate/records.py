"""The records a generation produces: one `Result` per prompt, its `Output`s, and the call's `Stats`.

`Result.as_json()` is the `generate --json` object (docs/schemas/generate.schema.json).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Output:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "stop_string"
    logprobs: list[dict[str, Any]] | None = None  # with --logprobs: one entry per generated token
    valid: bool | None = None  # with a constraint: complete, and for JSON parsed strictly and schema-checked

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("logprobs", "valid"):
            if data[optional] is None:
                del data[optional]
        return data


@dataclass
class Stats:
    load_seconds: float | None = None
    prompt_tokens: int = 0
    time_to_first_token: float | None = None
    prefill_tokens_per_second: float | None = None
    decode_tokens_per_second: float | None = None
    generated_tokens: int = 0
    total_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = "rss"
    attn_implementation: str | None = None
    compiled_step: str | None = None  # "built" or "loaded": decoded through engine.step's library; None: the plain step
    requests_in_batch: int = 1  # llmcli serve: the most requests this one shared a forward pass with, itself included
    batch_rows_mean: float | None = None  # llmcli serve's step scheduler: the rows per step, on average


@dataclass
class Result:
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[Output]
    stats: Stats
    generate_kwargs: dict[str, Any]
    seed: int | None
    interrupted: bool = False
    constraint: dict[str, Any] | None = None
    batch_size: int = 1  # the prompts of the generate() call this one was part of (batching changes numerics)
    batch_position: int = 0

    def as_json(self, model: dict[str, Any], replay: dict[str, Any] | None = None) -> dict[str, Any]:
        """`replay`: engine.load.environment's block; the batch is added here."""
        data = {
            "model": model,
            "prompt": self.prompt,
            "prompt_token_ids": self.prompt_token_ids,
            "generate_kwargs": self.generate_kwargs,
            "seed": self.seed,
            "outputs": [o.as_json() for o in self.outputs],
            "stats": asdict(self.stats),
        }
        if self.constraint is not None:
            data["constraint"] = self.constraint
        if self.interrupted:
            data["interrupted"] = True
        if replay is not None:
            batch: dict[str, Any] = {"size": self.batch_size, "position": self.batch_position}
            if self.stats.requests_in_batch > 1:  # llmcli serve: decoded beside other requests' rows
                batch["rows"] = self.stats.requests_in_batch
            data["replay"] = {**replay, "batch": batch}
        return data
