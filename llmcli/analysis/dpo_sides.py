"""dpo's two sides, the policy and the reference, wherever each comes from: loaded here (a LoRA policy's reference
being its base with the adapter switched off, one copy of the weights), a server asked for each sequence's
prompt log-probabilities, or a file of a reference pass kept with --save-ref-logps. Also the pairs tokenized by
the side loaded here, and that kept pass written and checked.

A server is reached through a function the command hands in (`call(token_ids) -> the score record`): this
module, like the rest of analysis/, never imports client.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError, UsageError

Call = Callable[[list[int]], dict[str, Any]]


def load_sides(base: str | None, ref: str | None, spec: Any, *, adapter: Path | None,
               reference_here: bool) -> tuple[Any, Any, tuple]:  # fmt: skip
    """The loaded policy (`base` with `adapter`) and, when `reference_here`, the reference: --ref, or the base
    with the adapter switched off."""
    from dataclasses import replace

    from llmcli.analysis.dpo import Model
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model

    policy = Model(load(resolve_model(base, verbose=spec.show_progress), replace(spec, adapter=adapter)))
    if not reference_here:
        return policy, None, (label(policy, adapter), None)
    if ref is None:
        reference = Model(policy.loaded, adapter_off=True)
    else:
        reference = Model(load(resolve_model(ref, verbose=spec.show_progress), replace(spec, adapter=None)))
    return policy, reference, (label(policy, adapter), label(reference, None))


def adapter_base(adapter: Path) -> str:
    from llmcli.modelfs.adapter import read_adapter

    base = read_adapter(adapter).config.get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{adapter}: adapter_config.json names no base_model_name_or_path; pass the base as POLICY "
                         "and the adapter with --adapter")  # fmt: skip
    return base


def label(side: Any, adapter: Path | None) -> dict[str, Any]:
    info = side.loaded.describe()
    name = Path(info["path"]).name
    if adapter is not None:
        name += f" + {adapter.name}"
    elif side.adapter_off:
        name += " (adapter off)"
    return {"label": name, "path": info["path"], "dtype": info["dtype"], "adapter": str(adapter) if adapter else None}


def tokenized(local: Any, other: Any, pairs: list[Any], *, path: Path, skip_bad: bool) -> tuple[list, list[str]]:
    """The pairs (or KTO's unpaired rows), tokenized by the side loaded here (and checked against the other side's
    tokenizer when it is loaded here too)."""
    from llmcli.analysis.pair_tokens import tokenize_pairs, tokenize_unpaired, tokenizer_difference
    from llmcli.analysis.pairs import PairError, Unpaired
    from llmcli.modelfs.config import geometry

    if hasattr(other, "loaded") and other.loaded is not local.loaded:
        differs = tokenizer_difference(local.loaded.tokenizer, other.loaded.tokenizer)
        if differs is not None:
            raise UsageError(f"the policy and the reference tokenize differently: {differs}")
    context = geometry(local.loaded.config).context
    try:
        tokenize = tokenize_unpaired if pairs and isinstance(pairs[0], Unpaired) else tokenize_pairs
        done, skipped = tokenize(local.loaded.tokenizer, pairs, context=context, skip_bad=skip_bad)
    except PairError as exc:
        raise PairError(exc.message, path=path) from None
    if not done:
        raise LlmcliError("no pair left to score: every one was skipped", path=path)
    return done, skipped


# ---------------------------------------------------------------------------------------- a kept reference pass


def read_stored(path: Path) -> tuple[Any, dict[str, Any]]:
    from llmcli.modelfs.ref_logps import read_ref_logps

    stored = read_ref_logps(path)
    name = stored.reference.get("label") or "?"
    return stored, {"label": f"{name} (from {path.name})", "path": str(path), "dtype": "float32", "adapter": None}


def stored_reference(stored: tuple[Any, dict], path: Path, policy: Any, pairs: list[Any], ref: str | None) -> Any:
    """The --ref-logps file checked against these pairs, the policy's tokenizer and --ref if named."""
    from llmcli.analysis.dpo import Stored
    from llmcli.modelfs.ref_logps import check_ref_logps
    from llmcli.modelfs.reference import tokenizer_hash

    data, kept_label = stored
    digest = digest_of(_resolved(ref)) if ref is not None else None
    check_ref_logps(data, path=path, pairs_sha256=pairs_sha256(pairs),
                    tokenizer_sha256=tokenizer_hash(policy.loaded.tokenizer), reference_digest=digest)  # fmt: skip
    tokens = {line: (c, r) for line, c, r in zip(data.lines, data.chosen, data.rejected, strict=True)}
    return Stored(tokens, kept_label)


def _resolved(model: str) -> Any:
    from llmcli.modelfs.source import resolve_model

    return resolve_model(model, verbose=False)


def digest_of(source: Any) -> str:
    """A reference model's identity, as --save-ref-logps records it and --ref-logps checks it."""
    from llmcli.modelfs.identity import identity

    return identity(source.path, gguf=source.gguf)["digest"]


def pairs_sha256(pairs: list[Any]) -> str:
    from llmcli.modelfs.ref_logps import pairs_hash

    return pairs_hash([(p.prompt, p.chosen, p.rejected) for p in pairs])


class Saver:
    """--save-ref-logps: the reference's token log-probabilities of every pair, written once all are scored."""

    def __init__(self, reference: Any, local: Any, pairs: list[Any]):
        self.reference, self.local, self.pairs = reference, local, pairs
        self.digest = digest_of(reference.loaded.source)
        self.rows: list[tuple[int, list[float], list[float]]] = []

    def keep(self, pair: Any, chosen: Any, rejected: Any) -> None:
        self.rows.append((pair.line, chosen.ref_token_logps, rejected.ref_token_logps))

    def write(self, path: Path) -> int:
        """Writes the file; its size."""
        from llmcli.modelfs.ref_logps import RefLogps, write_ref_logps
        from llmcli.modelfs.reference import tokenizer_hash

        tokenizer = tokenizer_hash(self.local.loaded.tokenizer)
        lines, chosen, rejected = (list(column) for column in zip(*self.rows, strict=True))
        data = RefLogps(lines, chosen, rejected, pairs_sha256(self.pairs), tokenizer,
                        {"label": label(self.reference, None)["label"], "digest": self.digest})  # fmt: skip
        return write_ref_logps(path, data)


# ---------------------------------------------------------------------------------------- a side on a server


def remote_policy(call: Call, where: str, name: str | None, ref: str, spec: Any) -> tuple[Any, Any, tuple]:
    """--server: the policy on the server, the reference loaded here (its tokenizer tokenizes the pairs)."""
    from llmcli.analysis.dpo import Model
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model

    reference = Model(load(resolve_model(ref, verbose=spec.show_progress), spec))
    policy = remote_side(call, where, name, reference, role="policy")
    return policy, reference, (policy.label, label(reference, None))


def remote_side(call: Call, where: str, name: str | None, local: Any, *, role: str) -> Any:
    """A side on a server at `where`, asked through `call` for each sequence's prompt log-probabilities by
    token ids. Its pieces are checked against the local side's tokenizer on the first sequence: the ids must
    mean the same tokens."""
    from llmcli.analysis.dpo import Fetched

    checked: list[bool] = []

    def fetch(ids: list[int]) -> list[float]:
        tokens = call(ids)["tokens"]
        if not checked:
            same_pieces(local.loaded.tokenizer, tokens, role=role)
            checked.append(True)
        return [t["logprob"] for t in tokens[1:]]

    shown = f"{name or 'the served model'} at {where}"
    return Fetched(fetch, {"label": shown, "path": where, "dtype": "the server's", "adapter": None})


def same_pieces(tokenizer: Any, tokens: list[dict[str, Any]], *, role: str) -> None:
    here = "reference" if role == "policy" else "policy"
    for token in tokens:
        mine = tokenizer.decode([token["token_id"]])
        if "\ufffd" not in mine and token["token"] and token["token"] != mine:
            raise UsageError(f"the policy and the reference tokenize differently: token id {token['token_id']} is "
                             f"{mine!r} for the {here}, {token['token']!r} for the {role}")  # fmt: skip
