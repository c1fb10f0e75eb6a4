"""A checkpoint's head other than the language model's: a sequence-classification head (a reward model, as TRL's
RewardTrainer writes it: one label, a `score` layer from the hidden size to one number), read from config.json
and the safetensors headers alone."""

from __future__ import annotations

from typing import Any

from llmcli.modelfs.checkpoint import Checkpoint

SUFFIX = "ForSequenceClassification"
HEAD_LAYERS = ("score", "classifier", "classification_head", "v_head")  # what transformers' heads are called


def classification_head(config: dict[str, Any], ckpt: Checkpoint | None = None) -> dict[str, Any] | None:
    """{"architecture", "num_labels", "labels", "problem_type", "layer", "shape"} for a sequence-classification
    checkpoint (the layer and its shape from the headers, where one of the usual names holds it); else None."""
    archs = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    arch = next((a for a in archs if isinstance(a, str) and a.endswith(SUFFIX)), None)
    if arch is None:
        return None
    labels = config.get("id2label") if isinstance(config.get("id2label"), dict) else {}
    names = [str(labels[k]) for k in sorted(labels, key=lambda k: int(k) if str(k).isdigit() else 0)]
    head = {"architecture": arch, "num_labels": len(names) or int(config.get("num_labels") or 2), "labels": names,
            "problem_type": config.get("problem_type"), "layer": None, "shape": None}  # fmt: skip
    for name in HEAD_LAYERS:
        tensor = (ckpt.tensors if ckpt is not None else {}).get(f"{name}.weight")
        if tensor is not None:
            head["layer"], head["shape"] = name, list(tensor.shape)
            break
    return head


def reward_problem(config: dict[str, Any]) -> str | None:
    """Why this checkpoint cannot be a reward model (one label on a sequence-classification head); None if it can."""
    head = classification_head(config)
    if head is None:
        archs = ", ".join(map(str, config.get("architectures") or ["no architecture"]))
        return f"config.json names {archs}, not a sequence-classification model: a reward model has a one-label head"
    if head["num_labels"] != 1:
        labels = ", ".join(head["labels"])
        return f"its classification head has {head['num_labels']} labels ({labels}); a reward model has one"
    return None
