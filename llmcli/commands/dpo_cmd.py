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
    loss: Loss = typer.Option(Loss.sigmoid, "--loss", help="The loss TRL computes: sigmoid, ipo or hinge."),
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
    from llmcli import output
    from llmcli.pairs import read_pairs

    _check(policy, file, beta, ref=ref, server=server, ref_server=ref_server, ref_logps=ref_logps,
           save_ref_logps=save_ref_logps, adapter=model_args.adapter)  # fmt: skip
    pairs, skipped = read_pairs(Path(file), skip_bad=skip_bad)
    stored = _read_stored(Path(ref_logps)) if ref_logps is not None else None
    if server is not None:
        policy_side, ref_side, labels = _remote_policy(server, policy, ref, model_args)
        local, other = ref_side, policy_side
    else:
        here = stored is None and ref_server is None  # else the reference comes from a file or a server, below
        policy_side, ref_side, labels = _sides(policy, ref, model_args, reference_here=here)
        local, other = policy_side, ref_side
    tokenized, too_long = _tokenized(local, other, pairs, path=Path(file), skip_bad=skip_bad)
    if stored is not None:
        ref_side = _stored_reference(stored, Path(ref_logps), local, tokenized, ref)
        labels = (labels[0], stored[1])
    if ref_server is not None:
        ref_side = _remote_side(ref_server, ref, local, role="reference")
        labels = (labels[0], ref_side.label)
    saver = _Saver(ref_side, local, tokenized) if save_ref_logps is not None else None
    for problem in [*skipped, *too_long]:
        output.warn(f"{file}: {problem}")
    rows = _scored(policy_side, ref_side, tokenized, beta=beta, loss=str(loss), decode=local.loaded.tokenizer.decode,
                   keep=saver.keep if saver is not None else None, each=each)  # fmt: skip
    if saver is not None:
        saver.write(Path(save_ref_logps))
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


def _sides(policy: str | None, ref: str | None, model_args: ModelArgs, *, reference_here: bool) -> tuple:
    """The loaded policy and (when `reference_here`) reference: one copy of the weights when the reference is
    the policy's base with its LoRA adapter switched off. POLICY may itself be a PEFT adapter directory (its
    base_model_name_or_path is then the base)."""
    from dataclasses import replace

    from llmcli.analysis.dpo import Model
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import check_combinations

    spec = model_args.spec(prefill_only=True)
    check_combinations(spec=spec)
    adapter, base = model_args.adapter, policy
    if _is_adapter(policy):
        if adapter is not None:
            raise UsageError("POLICY is a LoRA adapter already; drop --adapter")
        adapter, base = policy, _adapter_base(Path(policy))
    located = locate_adapter(adapter, option="--adapter") if adapter is not None else None
    policy_side = Model(load(resolve_model(base, verbose=spec.show_progress), replace(spec, adapter=located)))
    if not reference_here:
        return policy_side, None, (_label(policy_side, located), None)
    if ref is None:
        ref_side = Model(policy_side.loaded, adapter_off=True)
    else:
        ref_side = Model(load(resolve_model(ref, verbose=spec.show_progress), replace(spec, adapter=None)))
    return policy_side, ref_side, (_label(policy_side, located), _label(ref_side, None))


def _adapter_base(adapter: Path) -> str:
    from llmcli.modelfs.adapter import read_adapter

    base = read_adapter(adapter).config.get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{adapter}: adapter_config.json names no base_model_name_or_path; pass the base as POLICY "
                         "and the adapter with --adapter")  # fmt: skip
    return base


def _label(side: Any, adapter: Path | None) -> dict[str, Any]:
    info = side.loaded.describe()
    name = Path(info["path"]).name
    if adapter is not None:
        name += f" + {adapter.name}"
    elif side.adapter_off:
        name += " (adapter off)"
    return {"label": name, "path": info["path"], "dtype": info["dtype"], "adapter": str(adapter) if adapter else None}


def _tokenized(local: Any, other: Any, pairs: list[Any], *, path: Path, skip_bad: bool) -> tuple[list, list[str]]:
    from llmcli.analysis.pair_tokens import tokenize_pairs, tokenizer_difference
    from llmcli.errors import LlmcliError
    from llmcli.modelfs.config import geometry
    from llmcli.pairs import PairError

    """The pairs, tokenized by the side loaded here (and checked against the other side's tokenizer when it is
    loaded here too)."""
    if hasattr(other, "loaded") and other.loaded is not local.loaded:
        differs = tokenizer_difference(local.loaded.tokenizer, other.loaded.tokenizer)
        if differs is not None:
            raise UsageError(f"the policy and the reference tokenize differently: {differs}")
    context = geometry(local.loaded.config).context
    try:
        tokenized, skipped = tokenize_pairs(local.loaded.tokenizer, pairs, context=context, skip_bad=skip_bad)
    except PairError as exc:
        raise PairError(exc.message, path=path) from None
    if not tokenized:
        raise LlmcliError("no pair left to score: every one was skipped", path=path)
    return tokenized, skipped


def _read_stored(path: Path) -> tuple[Any, dict[str, Any]]:
    from llmcli.modelfs.ref_logps import read_ref_logps

    stored = read_ref_logps(path)
    label = stored.reference.get("label") or "?"
    return stored, {"label": f"{label} (from {path.name})", "path": str(path), "dtype": "float32", "adapter": None}


def _stored_reference(stored: tuple[Any, dict], path: Path, policy: Any, tokenized: list[Any], ref: str | None) -> Any:
    """The --ref-logps file checked against these pairs, the policy's tokenizer and --ref if named."""
    from llmcli.analysis.dpo import Stored
    from llmcli.modelfs.ref_logps import check_ref_logps
    from llmcli.modelfs.reference import tokenizer_hash

    data, label = stored
    digest = _digest(ref) if ref is not None else None
    check_ref_logps(data, path=path, pairs_sha256=_pairs_sha256(tokenized),
                    tokenizer_sha256=tokenizer_hash(policy.loaded.tokenizer), reference_digest=digest)  # fmt: skip
    tokens = {line: (c, r) for line, c, r in zip(data.lines, data.chosen, data.rejected, strict=True)}
    return Stored(tokens, label)


def _digest(model: str | None) -> str:
    from llmcli.modelfs.source import resolve_model

    return _digest_of(resolve_model(model, verbose=False))


def _digest_of(source: Any) -> str:
    """A reference model's identity, as --save-ref-logps records it and --ref-logps checks it."""
    from llmcli.modelfs.identity import identity

    return identity(source.path, gguf=source.gguf)["digest"]


def _pairs_sha256(tokenized: list[Any]) -> str:
    from llmcli.modelfs.ref_logps import pairs_hash

    return pairs_hash([(p.prompt, p.chosen, p.rejected) for p in tokenized])


class _Saver:
    """--save-ref-logps: the reference's token log-probabilities of every pair, written once all are scored."""

    def __init__(self, reference: Any, local: Any, tokenized: list[Any]):
        self.reference, self.local, self.tokenized = reference, local, tokenized
        self.digest = _digest_of(reference.loaded.source)
        self.rows: list[tuple[int, list[float], list[float]]] = []

    def keep(self, pair: Any, chosen: Any, rejected: Any) -> None:
        self.rows.append((pair.line, chosen.ref_token_logps, rejected.ref_token_logps))

    def write(self, path: Path) -> None:
        from llmcli import output
        from llmcli.modelfs.ref_logps import RefLogps, write_ref_logps
        from llmcli.modelfs.reference import tokenizer_hash
        from llmcli.units import human_bytes

        label = _label(self.reference, None)["label"]
        hashes = _pairs_sha256(self.tokenized)
        tokenizer = tokenizer_hash(self.local.loaded.tokenizer)
        lines, chosen, rejected = (list(column) for column in zip(*self.rows, strict=True))
        data = RefLogps(lines, chosen, rejected, hashes, tokenizer, {"label": label, "digest": self.digest})
        size = write_ref_logps(path, data)
        output.warn(
            f"wrote the reference's log-probabilities of {len(self.rows)} pairs to {path} ({human_bytes(size)})"
        )


def _remote_policy(server: str, name: str | None, ref: str, model_args: ModelArgs) -> tuple[Any, Any, tuple]:
    """--server: the policy on the server, the reference loaded here (its tokenizer tokenizes the pairs)."""
    from llmcli.analysis.dpo import Model
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import check_combinations

    spec = model_args.spec(prefill_only=True)
    check_combinations(spec=spec)
    reference = Model(load(resolve_model(ref, verbose=spec.show_progress), spec))
    policy = _remote_side(server, name, reference, role="policy")
    return policy, reference, (policy.label, _label(reference, None))


def _remote_side(server: str, name: str | None, local: Any, *, role: str) -> Any:
    """A side on a server, asked for each sequence's prompt log-probabilities by token ids. Its pieces are
    checked against the local side's tokenizer on the first sequence: the ids must mean the same tokens."""
    from llmcli import client
    from llmcli.analysis.dpo import Fetched

    checked: list[bool] = []

    def fetch(ids: list[int]) -> list[float]:
        record = client.call(server, "score", {"model": name or "", "token_ids": ids})
        tokens = record["tokens"]
        if not checked:
            _same_pieces(local.loaded.tokenizer, tokens, role=role)
            checked.append(True)
        return [t["logprob"] for t in tokens[1:]]

    label = f"{name or 'the served model'} at {server}"
    return Fetched(fetch, {"label": label, "path": server, "dtype": "the server's", "adapter": None})


def _same_pieces(tokenizer: Any, tokens: list[dict[str, Any]], *, role: str) -> None:
    here = "reference" if role == "policy" else "policy"
    for token in tokens:
        mine = tokenizer.decode([token["token_id"]])
        if "\ufffd" not in mine and token["token"] and token["token"] != mine:
            raise UsageError(f"the policy and the reference tokenize differently: token id {token['token_id']} is "
                             f"{mine!r} for the {here}, {token['token']!r} for the {role}")  # fmt: skip
