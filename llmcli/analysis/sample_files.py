"""What `llmcli sample` writes besides stdout: each prompt's group as one whole line of --output as it finishes
(resumable: a killed run's partial last line is cut, and --resume skips the prompts already there), and the SFT
rows and preference pairs, each file written whole through a temporary file once every group is in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcli.lines import split_lines


class Records:
    """--output: each prompt's group as one whole line, in file order, as it finishes; with --resume the lines
    already there (a partial last one cut) are kept and their prompts skipped."""

    def __init__(self, path: Path | None, *, resume: bool, rows: list[Any]):
        import json

        from llmcli import jobs

        self.path, self.earlier, self.done = path, [], 0
        if path is None:
            return
        self.done = jobs.start_index(jobs.JobSpec(path, resume=resume), [r.prompt for r in rows])
        if self.done:
            self.earlier = [json.loads(line) for line in split_lines(path.read_text(encoding="utf-8"))]

    def write(self, group: dict[str, Any], *, each: bool) -> None:
        import json

        from llmcli import output

        line = json.dumps(group, ensure_ascii=False) + "\n"
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(line)
        if each:
            output.write_stdout(line, flush=True)


def write_kept(groups: list[dict[str, Any]], keep: Any, *, sft: str | None, pairs: str | None,
               sft_format: str) -> dict[str, str]:  # fmt: skip
    """--sft and --pairs, each written whole through a temporary file once every group is in."""
    from llmcli.analysis import selection

    written = {}
    if sft is not None:
        rows = [selection.sft_row(g["prompt"], c["text"], sft_format) for g in groups
                for c in selection.kept(g, keep)]  # fmt: skip
        written["sft"] = _jsonl(Path(sft), rows)
    if pairs is not None:
        written["pairs"] = _jsonl(Path(pairs), [p for g in groups if (p := selection.pair_row(g)) is not None])
    return written


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    import json
    import os
    import tempfile

    from llmcli import output
    from llmcli.errors import LlmcliError, squash

    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)  # nothing half-written left behind
        raise LlmcliError(f"cannot write: {squash(exc)}", path=path) from None
    output.warn(f"{path}: {len(rows)} rows")
    return f"{path} ({len(rows)} rows)"
