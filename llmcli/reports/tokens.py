"""tokenize as a report: each token's id, piece, text and character and byte spans."""

from __future__ import annotations

from typing import Any

from llmcli.output import Para, Section, Table
from llmcli.reports import Report


def build(data: dict[str, Any], tokenizer_class: str) -> Report:
    """`data`: the tokenize record (model, text, count, chat, tokens)."""
    rows = [
        [
            str(r["index"]),
            str(r["id"]),
            r["token"],
            repr(r["text"]),
            f"{r['chars'][0]}–{r['chars'][1]}",
            f"{r['bytes'][0]}–{r['bytes'][1]}",
            "special" if r["special"] else "",
        ]
        for r in data["tokens"]
    ]
    rendered = data["text"]
    blocks: list[Any] = [
        Table(["#", "id", "token", "text", "chars", "bytes", ""], rows, numeric={0, 1}),
        Para(f"{data['count']} tokens, {len(rendered)} characters, {len(rendered.encode('utf-8'))} bytes"),
    ]
    if data["chat"]:
        blocks[:0] = [Para("rendered chat template", "head"), Para(repr(rendered))]
    return Report(data, [Section(f"Tokens ({tokenizer_class})", blocks)])
