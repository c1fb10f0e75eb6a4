"""inspect's section for a checkpoint with a classification head (a reward model), from modelfs.heads' facts."""

from __future__ import annotations

from typing import Any

from llmcli.modelfs.checkpoint import Checkpoint
from llmcli.modelfs.heads import classification_head, reward_problem
from llmcli.output import KV, Section


def head_section(config: dict[str, Any], ckpt: Checkpoint | None) -> tuple[dict[str, Any], Section] | None:
    """The head's facts and section, or None for a checkpoint without a classification head."""
    head = classification_head(config, ckpt)
    if head is None:
        return None
    head["reward_model"] = reward_problem(config) is None
    layer = head["layer"] or "?"
    shape = " x ".join(map(str, head["shape"])) if head["shape"] else "not in the headers"
    use = "a reward model: one score a sequence (llmcli reward)" if head["reward_model"] else "a classifier"
    rows = [
        ("architecture", head["architecture"], "the base model with a sequence-classification head"),
        ("labels", f"{head['num_labels']}", ", ".join(head["labels"]) or "unnamed"),
        ("layer", layer, f"{shape}: the last token's hidden state to the labels' logits"),
        ("use", use, ""),
    ]
    return head, Section("Classification head", [KV(rows)])
