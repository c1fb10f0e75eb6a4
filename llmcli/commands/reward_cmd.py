"""`llmcli reward RM -f data.jsonl`: a reward model's scores of completions, and on preference pairs how often
it prefers the chosen one, as TRL's RewardTrainer evaluates it. It scores; it never trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmcli.commands import options as opt
from llmcli.commands.model_options import ModelArgs, model_options
from llmcli.errors import UsageError

LOADING = ("revision", "device", "dtype", "trust_remote_code", "allow_pickle", "memory_check")


def register(app: typer.Typer) -> None:
    app.command("reward")(reward)


@model_options(*LOADING)
def reward(
    model: str = typer.Argument(
        ..., help="The reward model: a sequence-classification checkpoint with one label (a directory or Hub id)."
    ),
    file: str = typer.Option(
        None, "--file", "-f", help="JSONL: preference pairs (TRL's formats) or prompt/completion lines (required)."
    ),
    top: int = typer.Option(10, "--top", min=0, max=1000, help="How many pairs (or completions) to show."),
    each: bool = typer.Option(False, "--each", help="One JSON line per pair or completion on stdout, as scored."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="List bad lines on stderr and go on without them."),
    server: str = typer.Option(None, "--server", help="Not served yet: the reward model is loaded here."),
    json_out: opt.JsonOpt = False,
    *,
    model_args: ModelArgs,
) -> None:
    """Score completions with a reward model; on preference pairs, its accuracy and margin (TRL's names), the
    pairs it gets most wrong first."""
    if file is None:
        raise UsageError("reward needs the texts: -f data.jsonl")
    if server is not None:
        raise UsageError("reward --server: a reward model on a server (vLLM's classify or score endpoints) is not "
                         "supported yet; run it here")  # fmt: skip
    from llmcli import output
    from llmcli.analysis import reward as analysis

    kind, rows, skipped = analysis.read_rows(Path(file), skip_bad=skip_bad)
    loaded = _load(model, model_args)
    scored = _scored(loaded, kind, rows, path=Path(file), each=each)
    for problem in skipped:
        output.warn(f"{file}: {problem}")
    if each:
        return
    from llmcli.reports import reward as report

    info = loaded.describe()
    label = {"label": Path(info["path"]).name, "path": info["path"], "dtype": info["dtype"]}
    data = report.record(kind, scored, analysis.summary(kind, scored), shown=top, model=label, file=str(file),
                         skipped=skipped)  # fmt: skip
    output.present(report.build(data), json=json_out)


def _load(model: str, model_args: ModelArgs) -> Any:
    from llmcli.analysis.reward import load_reward_model

    return load_reward_model(model, model_args.spec(prefill_only=True))


def _scored(loaded: Any, kind: str, rows: list[Any], *, path: Path, each: bool) -> list[dict[str, Any]]:
    """Every row's figures (printed as they come with --each), with a progress bar on a terminal."""
    import json

    from llmcli import output
    from llmcli.analysis import reward as analysis
    from llmcli.analysis.pairs import PairError
    from llmcli.modelfs.config import geometry

    try:
        ids = analysis.sequences(loaded.tokenizer, kind, rows, context=geometry(loaded.config).context)
    except PairError as exc:
        raise PairError(exc.message, path=path) from None
    out = []
    with output.progress(len(rows), "scoring", enabled=output.stderr_is_tty()) as advance:
        for row in analysis.scored_rows(loaded, kind, ids):
            out.append(row)
            advance()
            if each:
                output.write_stdout(json.dumps(row) + "\n", flush=True)
    return out
