"""Two models on the same token windows: per position, both KL directions, whether their top tokens agree,
how the actual next token's probability moved, each side's NLL. The base side is a live model or a
reference file: its top K exactly, the tail estimated from the reference's samples of it (and bounded below
by the tail as one bucket; the estimate is never taken below that bound).

Only per-position figures and each side's top few candidates are kept; a window's full distributions are
dropped before the next window runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmcli.analysis.perplexity import targets_of, window_logprobs
from llmcli.scoring import Window

SHOWN = 5  # each side's candidates kept per position, for the "where they part" table
TINY = 1e-12  # a tail mass of 0 (float rounding) would make its log -inf


@dataclass
class Side:
    """One side of a comparison: a loaded model, with its adapter switched off for this side if asked."""

    loaded: Any
    adapter_off: bool = False


@dataclass
class PositionFigures:
    """Tensors over every scored position (position 1 first), concatenated window by window."""

    kl: list[Any] = field(default_factory=list)
    kl_reverse: list[Any] = field(default_factory=list)
    kl_bound: list[Any] = field(default_factory=list)  # from a reference: the tail as one bucket
    kl_reverse_bound: list[Any] = field(default_factory=list)
    agree: list[Any] = field(default_factory=list)
    base_logprob: list[Any] = field(default_factory=list)  # the actual next token's
    candidate_logprob: list[Any] = field(default_factory=list)
    base_top: list[Any] = field(default_factory=list)  # (ids, log-probabilities), SHOWN each
    candidate_top: list[Any] = field(default_factory=list)

    def arrays(self) -> dict[str, Any]:
        import torch

        def joined(parts: list[Any]) -> Any:
            return torch.cat(parts).cpu().numpy()

        bounds = {}
        if self.kl_bound:
            bounds = {"kl_bound": joined(self.kl_bound), "kl_reverse_bound": joined(self.kl_reverse_bound)}
        return {
            **bounds,
            "kl": joined(self.kl),
            "kl_reverse": joined(self.kl_reverse),
            "agree": joined(self.agree),
            "base_logprob": joined(self.base_logprob),
            "candidate_logprob": joined(self.candidate_logprob),
            "base_top_ids": joined([ids for ids, _ in self.base_top]),
            "base_top_logprobs": joined([lp for _, lp in self.base_top]),
            "candidate_top_ids": joined([ids for ids, _ in self.candidate_top]),
            "candidate_top_logprobs": joined([lp for _, lp in self.candidate_top]),
        }


def _live(figures: PositionFigures, base: Any, cand: Any, targets: Any) -> None:
    """Both sides' full distributions (log-probabilities, rows × vocabulary); `targets`: the actual tokens'."""
    import torch

    figures.kl.append((base.exp() * (base - cand)).sum(-1).clamp_min(0))
    figures.kl_reverse.append((cand.exp() * (cand - base)).sum(-1).clamp_min(0))
    figures.agree.append(base.argmax(-1) == cand.argmax(-1))
    figures.base_logprob.append(targets)
    values, indexes = torch.topk(base, SHOWN, dim=-1)
    figures.base_top.append((indexes, values))


def tail_divergences(sample_p: Any, sample_q: Any, base_tail: Any, cand_tail: Any) -> tuple[Any, Any]:
    """The tail's KL both ways beyond the one-bucket bound, from tokens sampled from the base's tail:
    p_tail · KL(p̃ ‖ q̃) and q_tail · KL(q̃ ‖ p̃), p̃ and q̃ the tails renormalised. With r = q̃/p̃ at each sample,
    E[r − 1] = 0 serves as a control variate: mean(r − 1 − log r) and mean(r log r − r + 1) are unbiased, never
    negative, and vary far less than the plain means of −log r and r log r."""
    log_r = (sample_q - cand_tail.log().unsqueeze(1)) - (sample_p - base_tail.log().unsqueeze(1))
    r = log_r.exp()
    forward = base_tail * (r - 1 - log_r).mean(-1)
    reverse = cand_tail * (r * log_r - r + 1).mean(-1)
    return forward, reverse


def _from_reference(figures: PositionFigures, ref: Any, rows: slice, cand: Any) -> None:
    """The base side as a reference: the top K exactly, the tail as one bucket (a lower bound) plus the tail's
    own divergence estimated from the reference's samples of it (tail_divergences)."""
    import torch

    def tensor(array: Any, *, ids: bool = False) -> Any:
        return torch.from_numpy(array[rows].astype("int64" if ids else "float64")).to(cand.device)

    top_ids, base_top = tensor(ref.top_ids, ids=True), tensor(ref.top_logprobs)
    base_tail = tensor(ref.tail_mass).clamp_min(TINY)
    cand_top = cand.gather(1, top_ids).double()
    cand_tail = (1.0 - cand_top.exp().sum(-1)).clamp_min(TINY)
    bound = (base_top.exp() * (base_top - cand_top)).sum(-1) + base_tail * (base_tail.log() - cand_tail.log())
    bound_reverse = (cand_top.exp() * (cand_top - base_top)).sum(-1) + cand_tail * (cand_tail.log() - base_tail.log())
    if ref.tail_ids.shape[1]:
        sample_q = cand.gather(1, tensor(ref.tail_ids, ids=True)).double()
        tail, tail_reverse = tail_divergences(tensor(ref.tail_logprobs), sample_q, base_tail, cand_tail)
    else:  # a reference from an engine's top log-probabilities: the bound is all there is
        tail = tail_reverse = torch.zeros_like(bound)
    figures.kl.append((bound + tail).clamp_min(0).float())
    figures.kl_reverse.append((bound_reverse + tail_reverse).clamp_min(0).float())
    figures.kl_bound.append(bound.clamp_min(0).float())
    figures.kl_reverse_bound.append(bound_reverse.clamp_min(0).float())
    figures.agree.append(top_ids[:, 0] == cand.argmax(-1))
    figures.base_logprob.append(tensor(ref.target_logprobs).float())
    figures.base_top.append((top_ids[:, :SHOWN], base_top[:, :SHOWN].float()))


def compare_windows(
    base: Side | None,
    cand: Side,
    ids: list[int],
    windows: list[Window],
    *,
    ref: Any = None,
    advance: Any = None,
) -> dict[str, Any]:
    """Per-position arrays over every window (see PositionFigures.arrays)."""
    import torch

    figures = PositionFigures()
    same = base is not None and base.loaded is cand.loaded and base.adapter_off == cand.adapter_off
    for win in windows:
        cand_rows = window_logprobs(cand.loaded.model, ids, win, adapter_off=cand.adapter_off)
        if ref is not None:
            _from_reference(figures, ref, slice(win.first - 1, win.end - 1), cand_rows)
        else:
            assert base is not None
            off = base.adapter_off
            base_rows = cand_rows if same else window_logprobs(base.loaded.model, ids, win, adapter_off=off)
            base_rows = base_rows.to(cand_rows.device)
            _live(figures, base_rows, cand_rows, targets_of(base_rows, ids, win))
        figures.candidate_logprob.append(targets_of(cand_rows, ids, win))
        values, indexes = torch.topk(cand_rows, SHOWN, dim=-1)
        figures.candidate_top.append((indexes, values))
        if advance is not None:
            advance()
    return figures.arrays()


def compare_record(
    base: Side | None,
    cand: Side,
    text: str,
    *,
    ref: Any = None,
    ref_path: Any = None,
    window: int | None = None,
    stride: int | None = None,
    shown: int = 10,
    progress: Any = None,
    labels: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
) -> dict[str, Any]:
    """The compare record: the text encoded by both tokenizers (the same ids, or exit 2), both sides scored
    on the same windows, the figures summarised."""
    from contextlib import nullcontext

    from llmcli.analysis.perplexity import choose_windows
    from llmcli.modelfs.reference import check_against, first_difference, tokenizer_hash
    from llmcli.reports import Decoder
    from llmcli.reports import compare as report

    tokenizer = cand.loaded.tokenizer
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if ref is not None:
        check_against(ref, path=ref_path, tokenizer_sha256=tokenizer_hash(tokenizer), ids=ids, window=window,
                      stride=stride)  # fmt: skip
        window, stride = ref.window, ref.stride
    elif base is not None and base.loaded is not cand.loaded:
        first_difference(list(base.loaded.tokenizer(text, add_special_tokens=True)["input_ids"]), ids, what="the text")
        window = window or choose_windows(base.loaded, len(ids), window, stride)[0]
    size, step, windows = choose_windows(cand.loaded, len(ids), window, stride)
    with progress(len(windows)) if progress else nullcontext(None) as advance:
        arrays = compare_windows(base, cand, ids, windows, ref=ref, advance=advance)
    reference = None
    if ref is not None:
        reference = {"path": str(ref_path), "k": ref.k, "tail_samples": int(ref.tail_ids.shape[1]),
                     "kl_lower_bound_mean": float(arrays["kl_bound"].mean()),
                     "kl_reverse_lower_bound_mean": float(arrays["kl_reverse_bound"].mean())}  # fmt: skip
    return report.assemble(arrays, ids, Decoder(tokenizer.decode), shown=shown, window=size, stride=step,
                           base=labels[0], candidate=labels[1], reference=reference)  # fmt: skip
