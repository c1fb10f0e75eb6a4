"""next-token and score as reports: the candidates before and after the filters, per-token likelihoods."""

from __future__ import annotations

import math
from typing import Any

from llmcli.output import Para, Section, Table
from llmcli.reports import Report

BAR = 24


def bar(p: float) -> str:
    filled = p * BAR
    full = int(filled)
    return "█" * full + ("▌" if filled - full >= 0.5 else "")


def next_token(data: dict[str, Any]) -> Report:
    """`data`: analysis.probe.next_token's record with the model and prompt added."""
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


def _perplexity_line(data: dict[str, Any]) -> str:
    stderr = data.get("perplexity_stderr")
    spread = f" ± {stderr:.3f}" if stderr is not None else ""
    return (
        f"{data['scored_tokens']:,} tokens scored: mean NLL {data['mean_nll']:.4f} nats, "
        f"perplexity {data['perplexity']:.3f}{spread}"
    )


def windowed_score(data: dict[str, Any]) -> Report:
    """analysis.perplexity.windowed_record: the text's perplexity and each window's."""
    rows = [
        [str(i), f"{w['begin']:,}–{w['end']:,}", f"{w['scored']:,}", f"{w['mean_nll']:.4f}", f"{w['perplexity']:.3f}"]
        for i, w in enumerate(data["windows"])
    ]
    blocks: list[Any] = [
        Para(_perplexity_line(data)),
        Para(
            f"{data['token_count']:,} tokens in {len(rows)} windows of {data['window']:,} tokens every "
            f"{data['stride']:,}; the first token is context only, every other one scored once",
            "dim",
        ),
        Table(["#", "tokens", "scored", "mean NLL", "perplexity"], rows, numeric={0, 2, 3, 4}),
    ]
    ref = data.get("reference")
    if ref:
        ratio = ref["full_logits_bytes_per_token"] / ref["bytes_per_token"]
        blocks.append(
            Para(
                f"reference {ref['path']}: {ref['bytes']:,} bytes, top {ref['k']} per position, "
                f"{ref['bytes_per_token']:,.0f} bytes per token ({ratio:,.0f}× smaller than all logits at 2 bytes each)"
            )
        )
    return Report(data, [Section("Score (strided windows)", blocks)])


def score(data: dict[str, Any]) -> Report:
    """`data`: analysis.probe.score's record with the model added, or the windowed record."""
    if "windows" in data:
        return windowed_score(data)
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
    summary = f"{_perplexity_line(data)}; total log-likelihood {data['total_logprob']:.3f}"
    table = Table(["#", "token", "id", "logprob", "P"], rows, numeric={0, 2, 3, 4})
    return Report(data, [Section("Score", [table, Para(summary)])])
