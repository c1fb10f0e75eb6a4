"""score in strided windows through vLLM: the text's ids from its /tokenize, each window sent as token ids
with `prompt_logprobs`, the same windows and record as a local run; with --save-ref, a reference file from
the top log-probabilities vLLM returns (20 at most: its `max_logprobs`), without tail samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, UsageError
from llmcli.scoring import Window, check_window, plan_windows, reference_data, window_figures, windowed_data

VLLM_MAX_LOGPROBS = 20


def _context(remote: Any, model: str) -> int | None:
    listed = remote.http.get(remote.base + "/v1/models")
    data = listed.json().get("data", []) if listed.status_code == 200 else []
    found = next((m for m in data if isinstance(m, dict) and m.get("id") == model), {})
    value = found.get("max_model_len")
    return int(value) if isinstance(value, int) else None


def _window_rows(remote: Any, model: str, ids: list[int], win: Window, k: int) -> list[dict[str, Any]]:
    """vLLM's prompt_logprobs entries for the positions the window scores ({str(id): {logprob, rank}})."""
    request = {"model": model, "prompt": ids[win.begin : win.end], "max_tokens": 1, "temperature": 0,
               "prompt_logprobs": k}  # fmt: skip
    entries = remote.post("/v1/completions", request)["choices"][0]["prompt_logprobs"]
    return entries[win.first - win.begin : win.end - win.begin]


def _top(entry: dict[str, Any], k: int) -> tuple[list[int], list[float]]:
    ranked = sorted(((v.get("rank") or 0, int(t), v["logprob"]) for t, v in entry.items()), key=lambda x: x[0])
    ranked = [r for r in ranked if r[0] and r[0] <= k][:k]
    return [t for _, t, _ in ranked], [lp for _, _, lp in ranked]


def windowed_score(remote: Any, model: str, text: str, *, window: int | None, stride: int | None,
                   save_ref: Path | None = None, k: int = VLLM_MAX_LOGPROBS) -> dict[str, Any]:  # fmt: skip
    context = _context(remote, model)
    check_window(window, stride, context=context)
    ids = remote.post("/tokenize", {"model": model, "prompt": text})["tokens"]
    size = window or min(context or len(ids), max(len(ids), 2))
    step = stride or max(1, size // 2)
    check_window(size, step, context=context)
    windows = plan_windows(len(ids), size, step)
    keep = min(k, VLLM_MAX_LOGPROBS) if save_ref is not None else 0
    logprobs: list[float] = []
    figures, tops = [], []
    for win in windows:
        rows = _window_rows(remote, model, ids, win, keep)
        values = [row[str(ids[p])]["logprob"] for p, row in zip(range(win.first, win.end), rows, strict=True)]
        logprobs += values
        figures.append(window_figures(win, values))
        tops += [_top(row, keep) for row in rows] if keep else []
    record = {"model": remote.model_info(model), **windowed_data(len(ids), size, step, logprobs, figures)}
    if save_ref is not None:
        record["reference"] = _save(remote, model, save_ref, ids, size, step, logprobs, tops, keep)
    return record


def _save(remote: Any, model: str, path: Path, ids: list[int], window: int, stride: int, logprobs: list[float],
          tops: list[tuple[list[int], list[float]]], k: int) -> dict[str, Any]:  # fmt: skip
    import numpy as np

    from llmcli.modelfs.reference import Reference, write_reference

    if any(len(t) < k for t, _ in tops):
        raise LlmcliError(f"{remote.engine.label} returned fewer than {k} candidates at some positions")
    top_ids = np.array([t for t, _ in tops], dtype=np.int64).reshape(len(tops), k)
    top_logprobs = np.array([lp for _, lp in tops], dtype=np.float32).reshape(len(tops), k)
    tail = np.clip(1.0 - np.exp(top_logprobs.astype(np.float64)).sum(axis=1), 0.0, 1.0)
    vocab = max(int(top_ids.max()) + 1, max(ids) + 1)  # a lower bound: vLLM does not say its vocabulary size
    ref = Reference(token_ids=ids, top_ids=top_ids, top_logprobs=top_logprobs, tail_mass=tail,
                    tail_ids=np.zeros((len(tops), 0), dtype=np.int64), tail_logprobs=np.zeros((len(tops), 0)),
                    target_logprobs=logprobs, window=window, stride=stride, vocab_size=vocab,
                    tokenizer_sha256="", model=remote.model_info(model))  # fmt: skip
    size = write_reference(path, ref)
    return reference_data(path, size, k, len(logprobs), vocab)


def refuse_save_ref(engine_label: str) -> UsageError:
    return UsageError(f"--save-ref needs each position's top log-probabilities, which {engine_label} does not return")
