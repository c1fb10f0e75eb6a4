"""`llmcli replay RECORD.json`: run a generate --json record again and say whether it came out the same."""

from __future__ import annotations

import json
from typing import Any

import typer

from llmcli.commands import options as opt
from llmcli.errors import LlmcliError
from llmcli.lines import split_lines
from llmcli.plan import Attn, Dtype


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)


def replay(
    record: str = typer.Argument(
        ..., help="A generate --json record (or a JSONL file of them, a chat /save file); '-' reads stdin."
    ),  # fmt: skip
    dtype: Dtype = typer.Option(Dtype.auto, "--dtype", help="Another dtype than recorded (auto: as recorded)."),
    device: str = typer.Option(None, "--device", help="Another device than recorded."),
    attn: Attn = typer.Option(Attn.auto, "--attn", help="Another attention implementation than recorded."),
    threads: int = typer.Option(None, "--threads", min=1, help="Another thread count than recorded."),
    json_out: opt.JsonOpt = False,
) -> None:
    """Load the recorded model (checked by its identity), rerun the exact prompt ids with the recorded
    arguments and seed, compare the output tokens: identical (exit 0), or the first position that differs with
    both tokens' probabilities, the margin, and what differs in the environment (exit 1)."""
    from llmcli import output
    from llmcli.analysis.replay import replay_record
    from llmcli.reports import replay as report

    overrides = {"dtype": dtype, "device": device, "attn": attn, "threads": threads}
    differed = 0
    for where, item in _records(record):
        data = replay_record(item, where, overrides)
        differed += not data["identical"]
        output.present(report.replay(data), json=json_out)
    if differed:
        raise LlmcliError(f"{differed} record(s) did not replay identically")


def _records(path: str) -> list[tuple[str, Any]]:
    """The records of a file: one JSON object, a chat /save file's records, or JSONL; named as FILE[:N]."""
    from llmcli.prompts import read_file, read_stdin

    text = read_stdin() if path == "-" else read_file(path)
    name = "stdin" if path == "-" else path
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        items = whole["records"] if "records" in whole and "outputs" not in whole else [whole]
        found = [(name if len(items) == 1 else f"{name}:{i + 1}", r) for i, r in enumerate(items)]
    else:
        found = []
        for number, line in enumerate(split_lines(text), 1):
            if line.strip():
                try:
                    found.append((f"{name}:{number}", json.loads(line)))
                except ValueError:
                    raise LlmcliError(f"line {number} is not JSON", path=name) from None
    if not found:
        raise LlmcliError("no record in it", path=name)
    return found
