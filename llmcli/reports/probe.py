"""next-token and score as reports: the candidates before and after the filters, per-token likelihoods."""

from __future__ import annotations

import math
from typing import Any

from llmcli.output import Para, Section, Table
from llmcli.reports import Report

BAR = 24


def check_scorable(token_ids: list[int]) -> None:
    if len(token_ids) < 2:
        from llmcli.errors import UsageError

        raise UsageError("scoring needs at least two tokens (the first one has nothing to be predicted from)")


def score_data(tokens: list[dict[str, Any]]) -> dict[str, Any]:
    """The score record from each token's {token_id, token, logprob} (the first one's logprob is None):
    totals, mean NLL and perplexity = exp(mean NLL). Local and remote scores both end here."""
    values = [t["logprob"] for t in tokens[1:]]
    nll = -sum(values) / len(values)
    return {
        "token_ids": [t["token_id"] for t in tokens],
        "tokens": tokens,
        "scored_tokens": len(values),
        "total_logprob": sum(values),
        "mean_nll": nll,
        "perplexity": math.exp(nll),
    }


def bar(p: float) -> str:
    filled = p * BAR
    full = int(filled)
    return "█" * full + ("▌" if filled - full >= 0.5 else "")


def next_token(data: dict[str, Any]) -> Report:
    """`data`: engine.probe.next_token's record with the model and prompt added."""
    filtered = bool(data["settings"])
    columns = ["#", "token", "id", "P(T=1)", ""]
    if filtered:
        columns += ["P after", "", "kept"]
    columns.append("cumulative")
    rows = []
    for c in data["candidates"]:
        row = [str(c["rank"]), repr(c["token"]), str(c["token_id"]), f"{c['prob']:.2%}", bar(c["prob"])]
        if filtered:
            row += [f"{c['prob_after']:.2%}", bar(c["prob_after"]), "yes" if c["kept"] else "no"]
        row.append(f"{c['cumulative']:.2%}")
        rows.append(row)
    what = ", ".join(f"{k}={v}" for k, v in data["settings"].items()) or "none (T=1)"
    if data["entropy_bits"] is None:  # from another engine: only the top log-probabilities travel
        summary = f"the top {len(rows)} of the distribution, as {data['model'].get('engine', 'the server')} returns it"
    else:
        summary = f"entropy {data['entropy_bits']:.2f} bits at T=1" + (
            f", {data['entropy_bits_after']:.2f} bits after filters; {data['kept_tokens']:,} of "
            f"{data['vocab_size']:,} tokens kept"
            if filtered
            else f"; vocabulary {data['vocab_size']:,}"
        )
    numeric = {0, 2, 3} | ({5} if filtered else set()) | {len(columns) - 1}
    title = f"Next token after {len(data['prompt_token_ids'])} prompt tokens (filters: {what})"
    return Report(data, [Section(title, [Table(columns, rows, numeric=numeric), Para(summary)])])


def score(data: dict[str, Any]) -> Report:
    """`data`: engine.probe.score's record with the model added."""
    rows = [
        [
            str(i),
            repr(t["token"]),
            str(t["token_id"]),
            "" if t["logprob"] is None else f"{t['logprob']:.3f}",
            "" if t["logprob"] is None else f"{math.exp(t['logprob']):.2%}",
        ]
        for i, t in enumerate(data["tokens"])
    ]
    summary = (
        f"{data['scored_tokens']} tokens scored: total log-likelihood {data['total_logprob']:.3f}, "
        f"mean NLL {data['mean_nll']:.4f} nats, perplexity {data['perplexity']:.3f}"
    )
    table = Table(["#", "token", "id", "logprob", "P"], rows, numeric={0, 2, 3, 4})
    return Report(data, [Section("Score", [table, Para(summary)])])
