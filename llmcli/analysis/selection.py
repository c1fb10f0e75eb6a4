"""What `llmcli sample` keeps of each prompt's group: rejection sampling's SFT rows (`--keep best`, `top-K` or
`above=X`, in TRL's prompt-completion or conversational format, or the study note's instruction/input/output)
and best-versus-worst preference pairs for `dpo` and `reward` (TRL's preference format). Pure: records in, rows
out; a completion with no reward is never kept."""

from __future__ import annotations

from typing import Any

from llmcli.sample_plan import Keep


def kept(record: dict[str, Any], keep: Keep) -> list[dict[str, Any]]:
    """The completions `keep` selects from one prompt's group, best first."""
    scored = sorted((c for c in record["completions"] if c["reward"] is not None), key=lambda c: -c["reward"])
    if keep.kind == "best":
        return scored[:1]
    if keep.kind == "top":
        return scored[: keep.count]
    return [c for c in scored if c["reward"] > keep.threshold]


def sft_row(prompt: Any, completion: str, form: str) -> dict[str, Any]:
    if form == "prompt-completion":
        if isinstance(prompt, list):
            return {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}]}
        return {"prompt": prompt, "completion": completion}
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if form == "messages":
        return {"messages": [*messages, {"role": "assistant", "content": completion}]}
    system = " ".join(m["content"] for m in messages if m["role"] == "system")
    users = [m["content"] for m in messages if m["role"] == "user"]
    return {"instruction": users[-1] if users else "", "input": system, "output": completion}


def pair_row(record: dict[str, Any]) -> dict[str, Any] | None:
    """The best and the worst completion of a group with a spread, as a preference pair; None without one."""
    scored = [c for c in record["completions"] if c["reward"] is not None]
    if len(scored) < 2 or record["zero_std"]:
        return None
    best = max(scored, key=lambda c: c["reward"])
    worst = min(scored, key=lambda c: c["reward"])
    if best["reward"] == worst["reward"]:
        return None
    prompt = record["prompt"]
    if isinstance(prompt, list):
        return {"prompt": prompt, "chosen": [{"role": "assistant", "content": best["text"]}],
                "rejected": [{"role": "assistant", "content": worst["text"]}]}  # fmt: skip
    return {"prompt": prompt, "chosen": best["text"], "rejected": worst["text"]}
