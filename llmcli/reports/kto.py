"""dpo --loss kto as a report: TRL's KTO evaluation metrics over the rows, then the rows the policy gets most
wrong (highest loss first). Pure: the analysis hands over rows."""

from __future__ import annotations

from typing import Any

from llmcli.output import Section, Table
from llmcli.reports import Report
from llmcli.reports.dpo import summary_blocks

EXPLAINED = {
    "loss": "the KTO loss, mean over rows (each times its label's weight)",
    "kl": "KL estimate: log pi − log pi_ref of mismatched completions, mean, at least 0",
    "rewards/chosen": "beta × (log pi − log pi_ref) of the desirable rows, mean",
    "logps/chosen": "log pi of the desirable completions (summed over tokens), mean",
    "rewards/rejected": "the same reward for the undesirable rows",
    "logps/rejected": "log pi of the undesirable completions, mean",
    "rewards/margins": "desirable reward − undesirable reward",
}


def record(rows: list[dict[str, Any]], summary: dict[str, Any], *, shown: int, **context: Any) -> dict[str, Any]:
    """The --json object (docs/schemas/kto.schema.json); `context`: policy, reference, beta, weights, file,
    skipped lines."""
    worst = sorted(rows, key=lambda r: -r["loss"])[:shown]
    desirable = sum(r["label"] for r in rows)
    return {**context, "loss_type": "kto", "rows": len(rows), "desirable": desirable,
            "undesirable": len(rows) - desirable, "summary": summary, "worst": worst}  # fmt: skip


def build(data: dict[str, Any]) -> Report:
    head = f"{data['desirable']} desirable, {data['undesirable']} undesirable rows, beta {data['beta']:g}"
    sections = [Section(f"KTO evaluation ({head})", summary_blocks(data, EXPLAINED))]
    if data["worst"]:
        table = Table(["line", "label", "loss", "reward", "log pi", "log pi_ref"],
                      [_row(r) for r in data["worst"]], numeric={2, 3, 4, 5})  # fmt: skip
        sections.append(Section("Rows the policy gets most wrong (highest loss first)", [table]))
    return Report(data, sections)


def _row(r: dict[str, Any]) -> list[str]:
    label = "desirable" if r["label"] else "undesirable"
    return [
        str(r["line"]),
        label,
        f"{r['loss']:.4f}",
        f"{r['reward']:+.4f}",
        f"{r['logps']:.3f}",
        f"{r['ref_logps']:.3f}",
    ]
