"""Scoring a text of any length in strided windows (llmcli.scoring), one forward pass per window.

Each pass asks the model only for the rows it scores (`logits_to_keep`), so memory is O(window × vocab)
at most, never O(text × vocab). What each window yields, its rows of log-probabilities, is reduced by the
caller: the target tokens' log-probabilities (score), the top K and the tail (a reference file), two models'
divergences (compare).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from llmcli.scoring import Window, check_window, plan_windows, reference_data, window_figures, windowed_data

LOGITS_SHARE = 0.25  # of the free memory, for one window's float32 logits and their log-softmax copies


def default_window(loaded: Any, *, context: int | None) -> int:
    """The model's context, capped so that a window's float32 logits (and three copies) fit in a quarter of
    the free memory."""
    from llmcli.modelfs.config import geometry
    from llmcli.modelfs.memory import device_memory

    vocab = geometry(loaded.config).vocab or 32_000
    budget = int(device_memory(loaded.device)["free_bytes"] * LOGITS_SHARE)
    fits = max(256, budget // (vocab * 4 * 4))
    return min(context or fits, fits)


def choose_windows(loaded: Any, count: int, window: int | None, stride: int | None) -> tuple[int, int, list[Window]]:
    """The window and stride (defaults: the capped context, half of it) and the windows over `count` tokens."""
    from llmcli.modelfs.config import geometry

    context = geometry(loaded.config).context
    check_window(window, stride, context=context)
    size = window or min(default_window(loaded, context=context), max(count, 2))
    step = stride or max(1, size // 2)
    check_window(size, step, context=context)
    return size, step, plan_windows(count, size, step)


def window_logprobs(model: Any, ids: list[int], win: Window, *, adapter_off: bool = False) -> Any:
    """log P(· | before) at each position the window scores: rows for ids[win.first:win.end], float32."""
    import torch

    from llmcli.engine.load.devices import input_device
    from llmcli.engine.load.loader import last_logits_only

    tensor = torch.tensor([ids[win.begin : win.end]], device=input_device(model))
    keep = last_logits_only(model, win.scored + 1)
    off = model.disable_adapter() if adapter_off else nullcontext()
    with torch.inference_mode(), off:
        logits = model(input_ids=tensor, use_cache=False, **keep).logits[0]
    # The row before a position predicts it: the last scored+1 rows, less the last (it predicts past the window).
    rows = logits[-(win.scored + 1) : -1].float()
    return torch.log_softmax(rows, dim=-1)


@dataclass
class Scored:
    """A text's target log-probabilities (position 1 on) and, when asked for, each position's top K and tail."""

    ids: list[int]
    window: int
    stride: int
    logprobs: list[float] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    top_ids: list[Any] = field(default_factory=list)  # per window: [rows, K] int tensors
    top_logprobs: list[Any] = field(default_factory=list)
    tail_mass: list[Any] = field(default_factory=list)
    tail_ids: list[Any] = field(default_factory=list)  # per window: [rows, K] samples from outside the top K
    tail_logprobs: list[Any] = field(default_factory=list)


def targets_of(rows: Any, ids: list[int], win: Window) -> Any:
    import torch

    targets = torch.tensor(ids[win.first : win.end], device=rows.device)
    return rows.gather(1, targets.unsqueeze(1)).squeeze(1)


def top_and_tail(rows: Any, k: int) -> tuple[Any, Any, Any]:
    """The top K ids and log-probabilities of each row, and the probability mass outside them (float64 sums)."""
    import torch

    values, indexes = torch.topk(rows, min(k, rows.shape[-1]), dim=-1)
    tail = (1.0 - values.double().exp().sum(dim=-1)).clamp_min(0.0)
    return indexes, values, tail


def tail_samples(logprobs: Any, top_ids: Any, count: int, *, generator: Any = None) -> tuple[Any, Any]:
    """`count` tokens per row drawn (with replacement) from the distribution outside its top ids, and their
    log-probabilities: what lets a reference file estimate the KL of the tail instead of bounding it."""
    import torch

    weights = logprobs.double().exp().scatter(1, top_ids, 0.0)
    empty = weights.sum(-1) <= 0
    if bool(empty.any()):  # all the mass in the top ids: any tail token will do, its weight is ~0 anyway
        weights[empty] = 1.0
        weights[empty] = weights[empty].scatter(1, top_ids[empty], 0.0)
    ids = torch.multinomial(weights, count, replacement=True, generator=generator)
    return ids, logprobs.gather(1, ids)


def score_windows(
    loaded: Any,
    ids: list[int],
    windows: list[Window],
    *,
    on_window: Callable[[], None] | None = None,
) -> Iterator[tuple[Window, Any]]:
    """Each window and its rows; `on_window` after each (a progress bar)."""
    for win in windows:
        rows = window_logprobs(loaded.model, ids, win)
        yield win, rows
        if on_window is not None:
            on_window()


def score_text(
    loaded: Any, ids: list[int], window: int, stride: int, windows: list[Window], *, top_k: int | None, progress: Any
) -> Scored:
    """Every scored position's target log-probability (and top K and tail for a reference file)."""
    import torch

    scored = Scored(ids=ids, window=window, stride=stride)
    generator = None
    for win, rows in score_windows(loaded, ids, windows, on_window=progress):
        values = targets_of(rows, ids, win).tolist()
        scored.logprobs += values
        scored.windows.append(window_figures(win, values))
        if top_k:
            if generator is None:  # seeded: the same text and model give the same reference file
                generator = torch.Generator(device=rows.device).manual_seed(0)
            indexes, top, tail = top_and_tail(rows, top_k)
            scored.top_ids.append(indexes.cpu())
            scored.top_logprobs.append(top.cpu())
            scored.tail_mass.append(tail.cpu())
            sample_ids, sample_logprobs = tail_samples(rows, indexes, top_k, generator=generator)
            scored.tail_ids.append(sample_ids.cpu())
            scored.tail_logprobs.append(sample_logprobs.cpu())
    return scored


def windowed_record(
    loaded: Any,
    text: str,
    *,
    window: int | None,
    stride: int | None,
    save_ref: Any = None,
    k: int = 64,
    progress: Any = None,
) -> dict[str, Any]:
    """The windowed score record (docs/score.md), and with `save_ref` the reference file written."""
    from llmcli.analysis.probe import model_info

    ids = list(loaded.tokenizer(text, add_special_tokens=True)["input_ids"])
    size, step, windows = choose_windows(loaded, len(ids), window, stride)
    with progress(len(windows)) if progress else nullcontext(None) as advance:
        scored = score_text(loaded, ids, size, step, windows, top_k=k if save_ref else None, progress=advance)
    from llmcli.engine.load.environment import environment

    record = {"model": model_info(loaded), **windowed_data(len(ids), size, step, scored.logprobs, scored.windows),
              "replay": environment(loaded)}  # fmt: skip
    if save_ref is not None:
        record["reference"] = _save_reference(loaded, scored, save_ref, k)
    return record


def _save_reference(loaded: Any, scored: Scored, path: Any, k: int) -> dict[str, Any]:
    import torch

    from llmcli.analysis.probe import model_info
    from llmcli.modelfs.config import geometry
    from llmcli.modelfs.reference import Reference, tokenizer_hash, write_reference

    vocab = geometry(loaded.config).vocab or int(scored.top_ids[0].max()) + 1
    ref = Reference(
        token_ids=scored.ids,
        top_ids=torch.cat(scored.top_ids).numpy(),
        top_logprobs=torch.cat(scored.top_logprobs).numpy(),
        tail_mass=torch.cat(scored.tail_mass).float().numpy(),
        tail_ids=torch.cat(scored.tail_ids).numpy(),
        tail_logprobs=torch.cat(scored.tail_logprobs).numpy(),
        target_logprobs=scored.logprobs,
        window=scored.window,
        stride=scored.stride,
        vocab_size=vocab,
        tokenizer_sha256=tokenizer_hash(loaded.tokenizer),
        model=model_info(loaded),
    )
    size = write_reference(path, ref)
    return reference_data(path, size, ref.k, len(scored.logprobs), vocab)


def score_any(loaded: Any, text: str, *, window: int | None = None, stride: int | None = None, save_ref: Any = None,
              k: int = 64, progress: Any = None) -> dict[str, Any]:  # fmt: skip
    """`score`: the per-token record for a text that fits one pass, the windowed one for a longer text or when
    windows or a reference file are asked for."""
    from llmcli.analysis.probe import score_record
    from llmcli.modelfs.config import geometry

    if window is None and stride is None and save_ref is None:
        count = len(loaded.tokenizer(text, add_special_tokens=True)["input_ids"])
        context = geometry(loaded.config).context
        if count <= default_window(loaded, context=context):
            return score_record(loaded, text)
    return windowed_record(loaded, text, window=window, stride=stride, save_ref=save_ref, k=k, progress=progress)
