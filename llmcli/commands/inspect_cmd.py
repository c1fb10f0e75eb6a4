"""`llmcli inspect PATH`: config, tokenizer, checkpoint, parameters, modules and memory, no weights read."""

from __future__ import annotations

import typer

from llmcli.commands.completion import model_paths
from llmcli.commands.options import JsonOpt, RevisionOpt
from llmcli.errors import UsageError

# Options that mean something only for some kinds of model; anything else is refused, never ignored.
APPLIES_TO = {
    "--only": ("hf",),
    "--depth": ("hf",),
    "--context": ("hf",),
    "--batch": ("hf",),
    "--device": ("hf",),
    "--max-memory": ("hf",),
    "--tensors": ("hf", "gguf"),
    "--base": ("adapter",),
}
KIND_NAMES = {"hf": "a model directory", "gguf": "a GGUF file", "adapter": "a LoRA adapter"}


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


def _parse_only(only: str | None) -> list[str]:
    from llmcli.reports.inspect import SECTIONS

    if not only:
        return list(SECTIONS)
    chosen = [s.strip().lower() for s in only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise UsageError(
            f"--only: unknown section(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SECTIONS)}"
        )
    return chosen


def check_applies(kind: str, given: dict[str, object]) -> None:
    """A usage error for an option given that this kind of model has no use for."""
    kind = "hf" if kind == "hub" else kind
    for option, value in given.items():
        if value not in (None, False) and kind not in APPLIES_TO[option]:
            raise UsageError(f"{option} does not apply to {KIND_NAMES[kind]}")


def inspect(
    path: str = typer.Argument(
        ...,
        help="Model directory (config.json, safetensors), a .gguf file or an adapter.",
        autocompletion=model_paths,
    ),
    only: str = typer.Option(
        None,
        "--only",
        help="Comma-separated sections: config, generation, tokenizer, "
        "checkpoint, parameters, modules, memory. The first four never import torch.",
    ),
    tensors: bool = typer.Option(False, "--tensors", help="List every tensor (name, dtype, shape, bytes, shard)."),
    depth: int = typer.Option(None, "--depth", min=0, help="Module tree depth (default: all levels)."),
    context: int = typer.Option(
        None, "--context", min=1, help="Context length for the KV-cache estimate (default: the model's max)."
    ),
    batch: int = typer.Option(None, "--batch", min=1, help="Batch size for the KV-cache estimate (default 1)."),
    device: str = typer.Option(
        None, "--device", help="Device whose memory the verdict uses: auto, cpu, cuda[:N] (default auto)."
    ),
    max_memory: str = typer.Option(
        None,
        "--max-memory",
        help="The placement proposal's budget instead of this machine's free memory, e.g. cpu=8GiB,cuda:0=20GiB.",
    ),
    json_out: JsonOpt = False,
    revision: RevisionOpt = None,
    base: str = typer.Option(
        None,
        "--base",
        help="For a LoRA adapter: the base model to measure it against "
        "(default: its base_model_name_or_path, when found locally).",
        autocompletion=model_paths,
    ),
) -> None:
    """Explain a model from its files alone: nothing is loaded, no weight is read."""
    from llmcli import output
    from llmcli.modelfs.locate import locate

    sections = _parse_only(only)
    ref = locate(path, revision)
    given = {"--only": only, "--depth": depth, "--context": context, "--batch": batch, "--device": device,
             "--max-memory": max_memory}  # fmt: skip
    check_applies(ref.kind, given | {"--tensors": tensors, "--base": base})
    if ref.kind == "adapter":
        from llmcli.reports import adapter

        report = adapter.build(ref.path, base=base)
    elif ref.kind == "gguf":
        from llmcli.reports import gguf

        report = gguf.build(ref.path, tensors=tensors)
    else:
        from llmcli.plan import parse_max_memory

        limits = parse_max_memory(max_memory) if max_memory else None
        options = {"tensors": tensors, "depth": depth, "context": context, "batch": batch or 1,
                   "device": device or "auto", "max_memory": limits}  # fmt: skip
        report = _inspect_directory(ref, sections, options)
    output.present(report, json=json_out)


def _inspect_directory(ref, sections, options):
    from llmcli.reports import inspect as inspect_report

    remote = None
    if ref.kind == "hub":  # not cached: small files fetched, safetensors headers read remotely
        from llmcli.modelfs.remote import fetch_metadata

        folder, remote = fetch_metadata(ref.repo_id, ref.revision)
        ref.path = folder
    return inspect_report.build(ref.path, sections=sections, checkpoint=remote, **options)
