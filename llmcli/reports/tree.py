"""inspect's module tree: the architecture's record (engine.meta) as nested display nodes."""

from __future__ import annotations

from typing import Any

from llmcli.output import Node


def tree_node(tree: dict[str, Any], depth: int | None, level: int = 0) -> Node:
    label = tree["class"] if level == 0 else f"{tree['name']} ({tree['class']})"
    if tree.get("repeat"):
        label += f" × {tree['repeat']}"
    bits = []
    if tree["detail"]:
        bits.append(tree["detail"])
    if tree["parameters"] and tree.get("repeat"):
        each = tree["parameters"] // tree["repeat"]
        bits.append(f"{tree['parameters']:,} params ({each:,} each), {tree['share']:.1%}")
    elif tree["parameters"]:
        bits.append(f"{tree['parameters']:,} params, {tree['share']:.1%}")
    for tie in tree.get("tied", []):
        bits.append(f"{tie}, counted once")
    node = Node(label, " · ".join(bits))
    if depth is None or level < depth:
        node.children = [tree_node(c, depth, level + 1) for c in tree["children"]]
    return node
