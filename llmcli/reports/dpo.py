"""dpo as a report: TRL's evaluation metrics over the pairs, then the pairs the policy gets most wrong (lowest
margin first), each with the completion token whose log-ratio moved most. Pure: the analysis hands over rows."""

from __future__ import annotations

from typing import Any

from llmcli.output import KV, Para, Section, Table
from llmcli.reports import Report

EXPLAINED = {
    "loss": "the DPO loss, mean over pairs",
    "rewards/chosen": "beta × (log pi − log pi_ref) of the chosen completions, mean",
    "rewards/rejected": "the same for the rejected completions",
    "rewards/accuracies": "share of pairs whose chosen reward beats the rejected one",
    "rewards/margins": "chosen reward − rejected reward, mean",
    "logps/chosen": "log pi of the chosen completions (summed over tokens), mean",
    "logps/rejected": "the same for the rejected completions",
    "kl/chosen": "KL(pi ‖ pi_ref) per token over the chosen completions, mean",
    "kl/rejected": "the same over the rejected completions",
}


SUMMARY = {  # TRL's metric names → the per-pair figure they average
    "loss": "loss",
    "rewards/chosen": "chosen_reward",
    "rewards/rejected": "rejected_reward",
    "rewards/accuracies": "correct",
    "rewards/margins": "margin",
    "logps/chosen": "chosen_logps",
    "logps/rejected": "rejected_logps",
    "kl/chosen": "kl_chosen",
    "kl/rejected": "kl_rejected",
}


def summary(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Means over the pairs (None for the KL when the reference came from --ref-logps)."""

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows]
        return None if any(v is None for v in values) else sum(float(v) for v in values) / len(values)

    return {name: mean(key) for name, key in SUMMARY.items()}


def record(rows: list[dict[str, Any]], *, shown: int, **context: Any) -> dict[str, Any]:
    """The --json object (docs/schemas/dpo.schema.json); `context`: policy, reference, beta, loss_type, pairs
    file, skipped lines."""
    worst = sorted(rows, key=lambda r: r["margin"])[:shown]
    return {**context, "pairs": len(rows), "summary": summary(rows), "worst": worst}


def summary_blocks(data: dict[str, Any], explained: dict[str, str]) -> list[Any]:
    """The sides, the summary's figures with what each means, and the lines skipped (dpo's and kto's)."""
    rows = [(name, "n/a" if value is None else f"{value:.6g}", explained[name])
            for name, value in data["summary"].items()]  # fmt: skip
    blocks: list[Any] = [Para(f"policy {data['policy']['label']} against reference {data['reference']['label']}")]
    blocks.append(KV(rows))
    if data.get("skipped"):
        blocks.append(Para(f"{len(data['skipped'])} line(s) skipped: {data['skipped'][0]}", "warn"))
    return blocks


def build(data: dict[str, Any]) -> Report:
    head = f"{data['pairs']} pairs, beta {data['beta']:g}, {data['loss_type']} loss"
    sections = [Section(f"DPO evaluation ({head})", summary_blocks(data, EXPLAINED))]
    if data["worst"]:
        table = Table(["line", "margin", "loss", "Δ chosen", "Δ rejected", "moved most"],
                      [_row(r) for r in data["worst"]], numeric={1, 2, 3, 4})  # fmt: skip
        sections.append(Section("Pairs the policy gets most wrong (lowest margin first)", [table]))
    return Report(data, sections)


def _row(r: dict[str, Any]) -> list[str]:
    moved = r["moved"]
    where = f"{moved['side']} {moved['token']!r}: p {moved['prob']:.3g} vs ref {moved['ref_prob']:.3g}"
    chosen = r["chosen_logps"] - r["ref_chosen_logps"]
    rejected = r["rejected_logps"] - r["ref_rejected_logps"]
    return [str(r["line"]), f"{r['margin']:+.4f}", f"{r['loss']:.4f}", f"{chosen:+.3f}", f"{rejected:+.3f}", where]
