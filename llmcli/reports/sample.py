"""sample as a report: TRL's GRPO metrics over the run, then each prompt's group (its mean and spread, the best
completion). Pure: the analysis hands over the records."""

from __future__ import annotations

from typing import Any

from llmcli.output import KV, Para, Section, Table
from llmcli.reports import Report

EXPLAINED = {
    "reward": "the weighted reward of every completion, mean",
    "reward_std": "its standard deviation",
    "frac_reward_zero_std": "share of groups with no spread: no learning signal for GRPO",
    "completions/mean_length": "completion tokens, mean",
    "completions/min_length": "the shortest completion",
    "completions/max_length": "the longest completion",
    "completions/clipped_ratio": "share of completions cut by max_new_tokens",
}


def record(groups: list[dict[str, Any]], summary: dict[str, Any], **context: Any) -> dict[str, Any]:
    """The --json object (docs/schemas/sample.schema.json); `context`: model, file, n, seed, rewards,
    scale_rewards, generate_kwargs, written files."""
    return {**context, "prompts": len(groups), "summary": summary, "groups": groups}


def build(data: dict[str, Any], *, shown: int) -> Report:
    rows = []
    for name, value in data["summary"].items():
        what = EXPLAINED.get(name) or ("that reward's mean" if name.endswith("/mean") else "its standard deviation")
        rows.append((name, "n/a" if value is None else f"{value:.6g}", what))
    rewards = ", ".join(f"{r['name']} × {r['weight']:g}" for r in data["rewards"]) or "none"
    head = f"{data['prompts']} prompts × {data['n']} completions, seed {data['seed']}"
    said = f"model {data['model']['path']}; rewards: {rewards}; scale_rewards {data['scale_rewards']}"
    blocks: list[Any] = [Para(said), KV(rows)]
    for kind, path in (data.get("written") or {}).items():
        blocks.append(Para(f"{kind}: {path}", "dim"))
    sections = [Section(f"Samples ({head})", blocks)]
    table = Table(["line", "mean", "std", "best", "best completion"], [_row(g) for g in data["groups"][:shown]],
                  numeric={1, 2, 3})  # fmt: skip
    if data["groups"] and shown:
        sections.append(Section("Groups (file order)", [table]))
    return Report(data, sections)


def _row(group: dict[str, Any]) -> list[str]:
    scored = [c for c in group["completions"] if c["reward"] is not None]
    best = max(scored, key=lambda c: c["reward"]) if scored else group["completions"][0]

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.4f}"

    text = best["text"].replace("\n", " ")
    return [str(group["line"]), show(group["mean"]), show(group["std"]), show(best["reward"]),
            text[:60] + ("…" if len(text) > 60 else "")]  # fmt: skip
