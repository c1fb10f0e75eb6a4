"""reward as a report: TRL's RewardTrainer metrics over the file, then the pairs the reward model gets most wrong
(lowest margin first), or the completions it scores lowest and highest. Pure: the analysis hands over rows."""

from __future__ import annotations

from typing import Any

from llmcli.output import KV, Para, Section, Table
from llmcli.reports import Report

EXPLAINED = {
    "accuracy": "share of pairs whose chosen completion scores higher",
    "margin": "chosen score − rejected score, mean",
    "loss": "−log sigmoid(chosen − rejected), mean: RewardTrainer's loss",
    "mean_reward": "mean score over every completion",
    "min_reward": "lowest score",
    "max_reward": "highest score",
}


def record(kind: str, rows: list[dict[str, Any]], summary: dict[str, float], *, shown: int,
           **context: Any) -> dict[str, Any]:  # fmt: skip
    """The --json object (docs/schemas/reward.schema.json); `context`: the reward model, file, skipped lines."""
    if kind == "pairs":
        listed = sorted(rows, key=lambda r: r["margin"])[:shown]
    else:
        ordered = sorted(rows, key=lambda r: r["score"])
        listed = ordered[: (shown + 1) // 2] + ordered[len(ordered) - shown // 2 :] if len(ordered) > shown else ordered
    return {**context, "kind": kind, "count": len(rows), "summary": summary, "shown": listed}


def build(data: dict[str, Any]) -> Report:
    noun = "pairs" if data["kind"] == "pairs" else "completions"
    rows = [(name, f"{value:.6g}", EXPLAINED[name]) for name, value in data["summary"].items()]
    blocks: list[Any] = [Para(f"reward model {data['model']['label']}"), KV(rows)]
    if data.get("skipped"):
        blocks.append(Para(f"{len(data['skipped'])} line(s) skipped: {data['skipped'][0]}", "warn"))
    sections = [Section(f"Reward model scores ({data['count']} {noun})", blocks)]
    if data["shown"] and data["kind"] == "pairs":
        table = Table(["line", "margin", "chosen", "rejected"], [_pair(r) for r in data["shown"]], numeric={1, 2, 3})
        sections.append(Section("Pairs it gets most wrong (lowest margin first)", [table]))
    elif data["shown"]:
        table = Table(["line", "score"], [[str(r["line"]), f"{r['score']:+.4f}"] for r in data["shown"]], numeric={1})
        sections.append(Section("Lowest and highest scores", [table]))
    return Report(data, sections)


def _pair(r: dict[str, Any]) -> list[str]:
    return [str(r["line"]), f"{r['margin']:+.4f}", f"{r['chosen']:+.4f}", f"{r['rejected']:+.4f}"]
