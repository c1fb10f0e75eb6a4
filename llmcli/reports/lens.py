"""The logit lens as a report: what each layer would predict, where the answer forms, the attention view.

Pure: the analysis (analysis/lens.py) hands over what one forward pass found; this module checks the user's
choices of positions and token, assembles the record and lays it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmcli.errors import UsageError
from llmcli.output import Para, Section, Table
from llmcli.reports import Report

SHOWN = 3  # top tokens per layer in the table (all `--top` of them are in --json)


@dataclass
class LensView:
    """What to look at: one position in depth, optionally a grid of positions, one tracked token, attention."""

    position: int = -1
    positions: str | None = None  # "all", "START:END", "A,B,C"
    track: str | None = None
    attention: bool = False

    def resolve(self, length: int) -> tuple[int, list[int]]:
        """The position shown in depth and the grid's positions, 0-based, checked against the prompt."""
        position = _index(self.position, length, "--position")
        return position, ([] if self.positions is None else parse_positions(self.positions, length))


def _index(value: int, length: int, flag: str) -> int:
    if not -length <= value < length:
        raise UsageError(f"{flag} {value}: the prompt has {length} tokens (0 to {length - 1}, or -1 for the last)")
    return value % length


def parse_positions(spec: str, length: int) -> list[int]:
    """`all`, `START:END` (END excluded, either may be left out, negatives count from the end), or `A,B,C`."""
    text = spec.strip()
    if text == "all":
        return list(range(length))
    try:
        if ":" in text:
            start, _, end = text.partition(":")
            first = _index(int(start), length, "--positions") if start.strip() else 0
            last = length if not end.strip() else (int(end) if int(end) >= 0 else length + int(end))
            if not first < last <= length:
                raise UsageError(f"--positions {spec}: an empty or out-of-range span of a {length}-token prompt")
            return list(range(first, last))
        return sorted({_index(int(part), length, "--positions") for part in text.split(",")})
    except ValueError:
        raise UsageError(f"--positions {spec}: expected all, START:END or a list like 0,3,5") from None


def single_token(text: str, ids: list[int], decode: Callable[[list[int]], str]) -> int:
    """The id of `--track`'s text, which must be exactly one token."""
    if len(ids) != 1:
        pieces = ", ".join(repr(decode([i])) for i in ids) or "none"
        raise UsageError(f"--track {text!r} is {len(ids)} tokens ({pieces}), not one")
    return ids[0]


def answer_layer(ranks: list[int]) -> int | None:
    """The first layer from which the target is the top token at every layer up to the last."""
    layer = None
    for index in range(len(ranks) - 1, -1, -1):
        if ranks[index] != 1:
            break
        layer = index
    return layer


def layer_name(layer: int) -> str:
    return "embeddings" if layer == 0 else f"layer {layer}"


def assemble(*, model, prompt, ids, decode, found, position, grid, tracked, attention) -> dict[str, Any]:
    """The --json record from the engine's Pass (cells[layer][i] for found.positions[i])."""
    column = {p: i for i, p in enumerate(found.positions)}
    here = column[position]
    target = found.targets[here]

    def top(cell):
        return [{"token_id": t, "token": decode(t), "prob": p} for t, p in cell.top]

    layers = [
        {
            "layer": layer,
            "name": layer_name(layer),
            "top": top(cells[here]),
            "target": {"prob": cells[here].target_prob, "rank": cells[here].target_rank},
            "kl_to_final": cells[here].kl_to_final,
        }
        for layer, cells in enumerate(found.cells)
    ]
    record = {
        "model": model,
        "prompt": prompt,
        "prompt_token_ids": ids,
        "tokens": [decode(i) for i in ids],
        "position": position,
        "target": {"token_id": target, "token": decode(target), "tracked": tracked},
        "answer_layer": answer_layer([layer["target"]["rank"] for layer in layers]),
        "final_check": found.final_check,
        "layers": layers,
        "grid": None,
        "track": None,
        "attention": attention,
    }
    if grid:
        record["grid"] = {
            "positions": grid,
            "layers": [[top(cells[column[p]])[0] for p in grid] for cells in found.cells],
        }
    if tracked:
        shown = grid or found.positions
        record["track"] = {
            "token_id": target,
            "token": decode(target),
            "positions": shown,
            "prob": [[cells[column[p]].target_prob for p in shown] for cells in found.cells],
            "rank": [[cells[column[p]].target_rank for p in shown] for cells in found.cells],
        }
    return record


# ---------------------------------------------------------------- display


def _style(prob: float) -> str:
    return "bold green" if prob >= 0.5 else "yellow" if prob >= 0.2 else "dim"


def _short(layer: int) -> str:
    return "emb" if layer == 0 else str(layer)


def _layer_table(data: dict[str, Any]) -> Table:
    rows = []
    for layer in data["layers"]:
        tops = "  ".join(f"{t['token']!r} {t['prob']:.0%}" for t in layer["top"][:SHOWN])
        target = layer["target"]
        rows.append(
            [_short(layer["layer"]), tops, f"{target['prob']:.2%}", str(target["rank"]), f"{layer['kl_to_final']:.3f}"]
        )
    styles = [["", "", _style(layer["target"]["prob"]), "", ""] for layer in data["layers"]]
    return Table(["layer", "top tokens", "P(target)", "rank", "KL→final"], rows, numeric={0, 2, 3, 4}, styles=styles)


def _summary(data: dict[str, Any]) -> str:
    token = repr(data["target"]["token"])
    last = len(data["layers"]) - 1
    where = data["answer_layer"]
    if where is None:
        formed = f"{token} is not the top token at the last layer"
    elif where == 0:
        formed = f"{token} is the top token from the embeddings on"
    else:
        formed = f"{token} takes rank 1 at layer {where} of {last} and keeps it"
    settled = next((layer["layer"] for layer in data["layers"] if layer["kl_to_final"] < 0.1), last)
    return (
        f"{formed}; KL to the final distribution first falls below 0.1 nats at {layer_name(settled)}. "
        f"The last row is the model's own output (max |ΔP| {data['final_check']:.1g})."
    )


def _grid(data: dict[str, Any], key: str) -> Table:
    block = data[key]
    positions = block["positions"]
    columns = ["layer", *(f"{p}:{data['tokens'][p]!r}" for p in positions)]
    rows, styles = [], []
    for layer, cells in enumerate(block["layers"] if key == "grid" else block["prob"]):
        if key == "grid":
            rows.append([_short(layer), *(f"{c['token']!r} {c['prob']:.0%}" for c in cells)])
            styles.append(["", *(_style(c["prob"]) for c in cells)])
        else:
            ranks = block["rank"][layer]
            rows.append([_short(layer), *(f"{p:.1%} #{r}" for p, r in zip(cells, ranks, strict=True))])
            styles.append(["", *(_style(p) for p in cells)])
    return Table(columns, rows, numeric=set(range(len(columns))) if key == "track" else {0}, styles=styles)


def _attention_table(attention: dict[str, Any]) -> Table:
    rows = []
    for layer in attention["layers"]:
        focused = max(
            ((h["head"], t) for h in layer["heads"] for t in h["top"] if t["position"] != 0),
            key=lambda pair: pair[1]["weight"],
            default=None,
        )
        best = "" if focused is None else f"h{focused[0]} → {focused[1]['token']!r}@{focused[1]['position']} "
        best += "" if focused is None else f"{focused[1]['weight']:.2f}"
        rows.append([str(layer["layer"]), f"{layer['first_token_share']:.0%}", best])
    return Table(["layer", "to first token", "most focused head (not on the first token)"], rows, numeric={0, 1})


def lens(data: dict[str, Any]) -> Report:
    position = data["position"]
    title = (
        f"Logit lens at position {position} ({data['tokens'][position]!r}) of {len(data['tokens'])}; "
        f"target {data['target']['token']!r} ({'tracked' if data['target']['tracked'] else 'the final top token'})"
    )
    sections = [Section(title, [_layer_table(data), Para(_summary(data))])]
    if data["grid"]:
        sections.append(Section("Top token per layer and position", [_grid(data, "grid")]))
    if data["track"]:
        token = repr(data["track"]["token"])
        sections.append(Section(f"{token}: probability and rank per layer and position", [_grid(data, "track")]))
    if data["attention"]:
        attention = data["attention"]
        note = Para(
            "Eager attention for this pass (SDPA never forms the weights); every head's top keys are in --json.",
            "dim",
        )
        title = f"Attention from position {attention['position']}"
        sections.append(Section(title, [_attention_table(attention), note]))
    return Report(data, sections)
