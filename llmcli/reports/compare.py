"""compare as a record and a report: how far a candidate's next-token distribution moved from the base's,
in summary and where they part most. Pure (numpy, no torch): the engine hands over per-position arrays."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from llmcli.output import KV, Para, Section, Table
from llmcli.reports import Report

PERCENTILES = (99.9, 99, 95, 90, 10, 5, 1)  # as llama-perplexity prints them
CONTEXT_TOKENS = 8


def distribution(values: Any) -> dict[str, float]:
    """mean, median, max, min and the percentiles of one per-position figure."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    out = {"mean": float(values.mean()), "median": float(np.median(values)), "max": float(values.max()),
           "min": float(values.min())}  # fmt: skip
    for pct in PERCENTILES:
        out[f"p{pct:g}"] = float(np.percentile(values, pct))
    return out


def _side(logprobs: Any) -> dict[str, float]:
    from llmcli.scoring import summarize

    summary = summarize([-float(v) for v in logprobs])
    return {"mean_nll": summary.mean_nll, "perplexity": summary.perplexity,
            "perplexity_stderr": summary.perplexity_stderr}  # fmt: skip


def _correlation(a: Any, b: Any) -> float | None:
    import numpy as np

    if len(a) < 2 or float(np.std(a)) == 0 or float(np.std(b)) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _candidates(ids: Any, logprobs: Any, decode: Callable[[int], str]) -> list[dict[str, Any]]:
    pairs = zip(ids, logprobs, strict=True)
    return [{"token_id": int(i), "token": decode(int(i)), "prob": math.exp(float(lp))} for i, lp in pairs]


def top_positions(arrays: dict[str, Any], ids: list[int], decode: Callable[[int], str], count: int) -> list[dict]:
    """The `count` positions with the largest KL(base ‖ candidate), largest first."""
    import numpy as np

    order = np.argsort(-arrays["kl"], kind="stable")[:count]
    rows = []
    for row in order.tolist():
        position = row + 1  # row 0 predicts token 1
        token = ids[position]
        context = "".join(decode(t) for t in ids[max(0, position - CONTEXT_TOKENS) : position])
        rows.append({
            "position": position,
            "context": context,
            "token_id": token,
            "token": decode(token),
            "kl": float(arrays["kl"][row]),
            "kl_reverse": float(arrays["kl_reverse"][row]),
            "base": {"prob": math.exp(float(arrays["base_logprob"][row])),
                     "top": _candidates(arrays["base_top_ids"][row], arrays["base_top_logprobs"][row], decode)},
            "candidate": {"prob": math.exp(float(arrays["candidate_logprob"][row])),
                          "top": _candidates(arrays["candidate_top_ids"][row], arrays["candidate_top_logprobs"][row],
                                             decode)},
        })  # fmt: skip
    return rows


def assemble(arrays: dict[str, Any], ids: list[int], decode: Callable[[int], str], *, shown: int,
             **context: Any) -> dict[str, Any]:  # fmt: skip
    """The --json record (docs/schemas/compare.schema.json); `context`: window, stride, base and candidate
    model descriptions, reference."""
    import numpy as np

    delta = np.exp(arrays["candidate_logprob"].astype(np.float64)) - np.exp(arrays["base_logprob"].astype(np.float64))
    base, candidate = _side(arrays["base_logprob"]), _side(arrays["candidate_logprob"])
    return {
        **context,
        "scored_tokens": len(arrays["kl"]),
        "kl": distribution(arrays["kl"]),
        "kl_reverse": distribution(arrays["kl_reverse"]),
        "top1_agreement": float(np.mean(arrays["agree"])),
        "delta_p": {**distribution(delta), "rms": float(np.sqrt(np.mean(delta**2)))},
        "base": {**context.get("base", {}), **base},
        "candidate": {**context.get("candidate", {}), **candidate},
        "perplexity_ratio": candidate["perplexity"] / base["perplexity"],
        "nll_correlation": _correlation(-arrays["base_logprob"], -arrays["candidate_logprob"]),
        "top_positions": top_positions(arrays, ids, decode, shown),
    }


# ---------------------------------------------------------------- display


def _figures(name: str, d: dict[str, float]) -> list[str]:
    return [name, *(f"{d[k]:.5f}" for k in ("mean", "median", "max", "p99.9", "p99", "p95", "p90", "p10", "p5", "p1"))]


def _where(rows: list[dict[str, Any]]) -> Table:
    def tops(side: dict[str, Any]) -> str:
        return "  ".join(f"{c['token']!r} {c['prob']:.0%}" for c in side["top"][:3])

    body = [
        [str(r["position"]), repr(r["context"])[-32:], repr(r["token"]), f"{r['kl']:.4f}",
         f"{r['base']['prob']:.1%} → {r['candidate']['prob']:.1%}", tops(r["base"]), tops(r["candidate"])]
        for r in rows
    ]  # fmt: skip
    columns = ["pos", "context", "actual", "KL", "P(actual)", "base's top", "candidate's top"]
    return Table(columns, body, numeric={0, 3})


def compare(data: dict[str, Any]) -> Report:
    base, cand = data["base"], data["candidate"]
    summary = KV(
        [
            ("base", f"{base.get('label', '')}",
             f"perplexity {base['perplexity']:.3f} ± {base['perplexity_stderr']:.3f}"),
            ("candidate", f"{cand.get('label', '')}",
             f"perplexity {cand['perplexity']:.3f} ± {cand['perplexity_stderr']:.3f}"),
            ("perplexity ratio", f"{data['perplexity_ratio']:.5f}", "candidate / base"),
            ("top-1 agreement", f"{data['top1_agreement']:.2%}", "positions where both models' top token is the same"),
            ("mean KL", f"{data['kl']['mean']:.5f} nats", "KL(base ‖ candidate)"),
            ("mean KL reverse", f"{data['kl_reverse']['mean']:.5f} nats", "KL(candidate ‖ base)"),
            ("Δp actual token", f"mean {data['delta_p']['mean']:+.5f}, RMS {data['delta_p']['rms']:.5f}",
             "P_candidate − P_base of the token that came next"),
            ("NLL correlation", "n/a" if data["nll_correlation"] is None else f"{data['nll_correlation']:.5f}",
             "Pearson, per-token NLLs"),
            ("scored tokens", f"{data['scored_tokens']:,}", f"windows of {data['window']:,} every {data['stride']:,}"),
        ]
    )  # fmt: skip
    header = ["", "mean", "median", "max", "p99.9", "p99", "p95", "p90", "p10", "p5", "p1"]
    spread = Table(header, [_figures("KL", data["kl"]), _figures("KL reverse", data["kl_reverse"]),
                            _figures("Δp", data["delta_p"])], numeric=set(range(1, 11)))  # fmt: skip
    blocks: list[Any] = [summary, spread]
    if data.get("reference"):
        ref = data["reference"]
        bounds = f"{ref['kl_lower_bound_mean']:.5f} and {ref['kl_reverse_lower_bound_mean']:.5f}"
        if ref["tail_samples"]:
            how = (f"the tail estimated from {ref['tail_samples']} samples of it; counting the tail as one bucket "
                   f"instead gives the lower bounds {bounds}")  # fmt: skip
        else:
            how = "the tail as one bucket: both KLs are lower bounds (the file holds no samples of the tail)"
        blocks.append(Para(f"base from {ref['path']}: the top {ref['k']} per position exactly, {how}", "dim"))
    sections = [Section("Compare", blocks)]
    if data["top_positions"]:
        sections.append(Section("Where they part (largest KL first)", [_where(data["top_positions"])]))
    return Report(data, sections)
