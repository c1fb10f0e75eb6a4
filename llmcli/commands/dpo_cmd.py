"""`llmcli dpo POLICY -f pairs.jsonl`: what a DPO or RLHF run did to a model, measured on preference pairs
against its reference, as TRL's DPOTrainer.evaluate() measures it. It evaluates; it never trains."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from llmcli.commands import options as opt
from llmcli.commands.model_options import ModelArgs, locate_adapter, model_options
from llmcli.errors import UsageError

LOADING = ("revision", "device", "dtype", "trust_remote_code", "allow_pickle", "memory_check", "adapter")


class Loss(StrEnum):
    sigmoid = "sigmoid"
    ipo = "ipo"
    hinge = "hinge"
    kto = "kto"


def register(app: typer.Typer) -> None:
    app.command("dpo")(dpo)


@model_options(*LOADING)
def dpo(
    policy: str = typer.Argument(
        None, help="The trained model: a directory, .gguf, Hub id or PEFT adapter (default: the embedded model)."
    ),
    file: str = typer.Option(None, "--file", "-f", help="Preference pairs, JSONL in TRL's formats (required)."),
    ref: str = typer.Option(
        None, "--ref", help="The reference model (default: the policy's base with its LoRA adapter switched off)."
    ),
    beta: float = typer.Option(0.1, "--beta", help="DPO's beta: the strength of the KL term (> 0)."),
    loss: Loss = typer.Option(
        Loss.sigmoid, "--loss", help="The loss TRL computes: sigmoid, ipo or hinge; kto on unpaired, labelled rows."
    ),
    desirable_weight: float = typer.Option(1.0, "--desirable-weight", help="KTO's weight of desirable rows (> 0)."),
    undesirable_weight: float = typer.Option(
        1.0, "--undesirable-weight", help="KTO's weight of undesirable rows (> 0)."
    ),
    top: int = typer.Option(10, "--top", min=0, max=1000, help="How many of the worst pairs to show."),
    each: bool = typer.Option(False, "--each", help="One JSON line per pair on stdout, as each is scored."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="List bad lines on stderr and go on without them."),
    save_ref_logps: str = typer.Option(
        None, "--save-ref-logps", help="Keep the reference's log-probabilities of these pairs in FILE, for --ref-logps."
    ),
    ref_server: str = typer.Option(
        None, "--ref-server", help="The reference on llmcli serve or vLLM (URL); --ref names its model there."
    ),
    ref_logps: str = typer.Option(
        None, "--ref-logps", help="The reference from a --save-ref-logps FILE: no reference model loaded (no KL)."
    ),
    json_out: opt.JsonOpt = False,
    server: str = typer.Option(
        None,
        "--server",
        help="The policy on llmcli serve or vLLM (URL; POLICY names its model there); the "
        "reference is loaded here (--ref).",
    ),
    *,
    model_args: ModelArgs,
) -> None:
    """Reward accuracy, margins, loss, log-probabilities and the KL to the reference on preference pairs (TRL's
    evaluation figures), and the pairs the policy still gets wrong, each with the token that moved most."""
    _check(policy, file, beta, ref=ref, server=server, ref_server=ref_server, ref_logps=ref_logps,
           save_ref_logps=save_ref_logps, adapter=model_args.adapter)  # fmt: skip
    if loss == Loss.kto:
        _check_kto(desirable_weight, undesirable_weight, server, ref_server, ref_logps, save_ref_logps)
        return _kto(policy, ref, Path(file), model_args, beta=beta, weights=(desirable_weight, undesirable_weight),
                    top=top, each=each, skip_bad=skip_bad, json_out=json_out)  # fmt: skip
    from llmcli import output
    from llmcli.analysis import dpo_sides as sides
    from llmcli.analysis.pairs import read_pairs

    pairs, skipped = read_pairs(Path(file), skip_bad=skip_bad)
    stored = sides.read_stored(Path(ref_logps)) if ref_logps is not None else None
    spec = _spec(model_args)
    if server is not None:
        policy_side, ref_side, labels = sides.remote_policy(_scorer(server, policy), server, policy, ref, spec)
        local, other = ref_side, policy_side
    else:
        base, adapter = _policy_and_adapter(policy, model_args.adapter)
        here = stored is None and ref_server is None  # else the reference comes from a file or a server, below
        policy_side, ref_side, labels = sides.load_sides(base, ref, spec, adapter=adapter, reference_here=here)
        local, other = policy_side, ref_side
    tokenized, too_long = sides.tokenized(local, other, pairs, path=Path(file), skip_bad=skip_bad)
    if stored is not None:
        ref_side = sides.stored_reference(stored, Path(ref_logps), local, tokenized, ref)
        labels = (labels[0], stored[1])
    if ref_server is not None:
        ref_side = sides.remote_side(_scorer(ref_server, ref), ref_server, ref, local, role="reference")
        labels = (labels[0], ref_side.label)
    saver = sides.Saver(ref_side, local, tokenized) if save_ref_logps is not None else None
    for problem in [*skipped, *too_long]:
        output.warn(f"{file}: {problem}")
    rows = _scored(policy_side, ref_side, tokenized, beta=beta, loss=str(loss), decode=local.loaded.tokenizer.decode,
                   keep=saver.keep if saver is not None else None, each=each)  # fmt: skip
    if saver is not None:
        _write_saved(saver, Path(save_ref_logps))
    if each:
        return
    from llmcli.reports import dpo as report

    data = report.record(rows, shown=top, policy=labels[0], reference=labels[1], beta=beta, loss_type=str(loss),
                         file=str(file), skipped=[*skipped, *too_long])  # fmt: skip
    output.present(report.build(data), json=json_out)


def _check(policy: str | None, file: str | None, beta: float, **given: Any) -> None:
    """Usage errors, before anything loads: the pairs, beta, and one reference said one way."""
    if file is None:
        raise UsageError("dpo needs the pairs: -f pairs.jsonl")
    if not beta > 0:
        raise UsageError(f"--beta must be > 0, got {beta}")
    if given["ref_server"] is not None and given["ref_logps"] is not None:
        raise UsageError("--ref-server and --ref-logps both give the reference: pick one")
    if given["ref_logps"] is not None and given["save_ref_logps"] is not None:
        raise UsageError("--ref-logps reads the reference's log-probabilities; --save-ref-logps writes them: pick one")
    if given["server"] is not None and (given["ref"] is None or given["ref_server"] or given["ref_logps"]):
        raise UsageError("with --server the policy runs there and the pairs are tokenized here: name a reference "
                         "model to load here with --ref")  # fmt: skip
    if given["server"] is not None and given["adapter"] is not None:
        raise UsageError("--adapter goes on a policy loaded here; with --server the policy runs on the server")
    if given["save_ref_logps"] is not None and given["ref_server"] is not None:
        raise UsageError("--save-ref-logps keeps a reference model's pass made here, not a server's")
    named = [given[k] for k in ("ref", "ref_logps", "ref_server", "adapter")]
    if all(v is None for v in named) and not _is_adapter(policy):
        raise UsageError("dpo needs a reference: --ref REF, --ref-logps FILE, or a LoRA policy (--adapter) whose "
                         "base is the reference")  # fmt: skip


def _check_kto(desirable: float, undesirable: float, *elsewhere: str | None) -> None:
    if not (desirable > 0 and undesirable > 0):
        raise UsageError("--desirable-weight and --undesirable-weight must be > 0")
    if any(option is not None for option in elsewhere):
        raise UsageError("--loss kto scores both sides here: --server, --ref-server, --ref-logps and "
                         "--save-ref-logps go with the paired losses")  # fmt: skip


def _kto(policy: str | None, ref: str | None, file: Path, model_args: ModelArgs, *, beta: float,
         weights: tuple[float, float], top: int, each: bool, skip_bad: bool, json_out: bool) -> None:  # fmt: skip
    """KTO on TRL's unpaired format (prompt, completion, label), as TRL's KTOTrainer.evaluate() scores it."""
    import json

    from llmcli import output
    from llmcli.analysis import dpo_sides as sides
    from llmcli.analysis import kto
    from llmcli.analysis.pairs import read_unpaired
    from llmcli.reports import kto as report

    rows, skipped = read_unpaired(file, labelled=True, skip_bad=skip_bad)
    base, adapter = _policy_and_adapter(policy, model_args.adapter)
    policy_side, ref_side, labels = sides.load_sides(base, ref, _spec(model_args), adapter=adapter,
                                                     reference_here=True)  # fmt: skip
    tokenized, too_long = sides.tokenized(policy_side, ref_side, rows, path=file, skip_bad=skip_bad)
    for problem in [*skipped, *too_long]:
        output.warn(f"{file}: {problem}")
    with output.progress(len(tokenized), "scoring rows", enabled=output.stderr_is_tty()) as advance:
        scored, kl = kto.score_rows(policy_side, ref_side, tokenized, {r.line: r.label for r in rows}, beta=beta,
                                    weights=kto.Weights(*weights), advance=advance)  # fmt: skip
    if each:
        output.write_stdout("".join(json.dumps(row) + "\n" for row in scored), flush=True)
        return
    data = report.record(scored, kto.summary(scored, kl), shown=top, policy=labels[0], reference=labels[1],
                         beta=beta, weights={"desirable": weights[0], "undesirable": weights[1]}, file=str(file),
                         skipped=[*skipped, *too_long])  # fmt: skip
    output.present(report.build(data), json=json_out)


def _scored(policy: Any, reference: Any, tokenized: list[Any], *, each: bool, **options: Any) -> list[dict]:
    """Every pair's row (printed as it comes with --each), with a progress bar on a terminal."""
    import json

    from llmcli import output
    from llmcli.analysis.dpo import score_pairs

    rows = []
    with output.progress(len(tokenized), "scoring pairs", enabled=output.stderr_is_tty()) as advance:
        for row in score_pairs(policy, reference, tokenized, advance=advance, **options):
            rows.append(row)  # a few numbers and one token: the batch, not the file, bounds memory
            if each:
                output.write_stdout(json.dumps(row, ensure_ascii=False) + "\n", flush=True)
    return rows


def _is_adapter(path: str | None) -> bool:
    return path is not None and (Path(path) / "adapter_config.json").is_file()


def _spec(model_args: ModelArgs) -> Any:
    from llmcli.plan import check_combinations

    spec = model_args.spec(prefill_only=True)
    check_combinations(spec=spec)
    return spec


def _policy_and_adapter(policy: str | None, adapter: str | None) -> tuple[str | None, Path | None]:
    """The base to load and the LoRA adapter on it: POLICY may itself be a PEFT adapter directory (its
    base_model_name_or_path is then the base)."""
    from llmcli.analysis.dpo_sides import adapter_base

    base = policy
    if _is_adapter(policy):
        if adapter is not None:
            raise UsageError("POLICY is a LoRA adapter already; drop --adapter")
        adapter, base = policy, adapter_base(Path(policy))
    return base, locate_adapter(adapter, option="--adapter") if adapter is not None else None


def _scorer(server: str, name: str | None) -> Any:
    """Asks the server for a sequence's prompt log-probabilities by token ids."""
    from llmcli import client

    return lambda ids: client.call(server, "score", {"model": name or "", "token_ids": ids})


def _write_saved(saver: Any, path: Path) -> None:
    from llmcli import output
    from llmcli.units import human_bytes

    size = saver.write(path)
    output.warn(f"wrote the reference's log-probabilities of {len(saver.rows)} pairs to {path} ({human_bytes(size)})")
