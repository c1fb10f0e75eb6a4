"""`llmcli inspect PATH`: config, tokenizer, checkpoint, parameters, modules and memory, no weights read."""

from __future__ import annotations

import typer

from llmcli.commands.options import RevisionOpt
from llmcli.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


def _parse_only(only: str | None) -> list[str]:
    from llmcli.inspect_report import SECTIONS

    if not only:
        return list(SECTIONS)
    chosen = [s.strip().lower() for s in only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise UsageError(
            f"--only: unknown section(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SECTIONS)}"
        )
    return chosen


def inspect(
    path: str = typer.Argument(..., help="Model directory (config.json, safetensors) or a .gguf file."),
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
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size for the KV-cache estimate."),
    device: str = typer.Option("auto", "--device", help="Device whose memory the verdict uses: auto, cpu, cuda[:N]."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else."),
    revision: RevisionOpt = None,
    base: str = typer.Option(
        None,
        "--base",
        help="For a LoRA adapter: the base model to measure it against "
        "(default: its base_model_name_or_path, when found locally).",
    ),
) -> None:
    """Explain a model from its files alone: nothing is loaded, no weight is read."""
    from llmcli import output
    from llmcli.modelfs.locate import locate

    sections = _parse_only(only)
    ref = locate(path, revision)
    remote = None
    if ref.kind == "hub":  # not cached: small files fetched, safetensors headers read remotely
        from llmcli.modelfs.locate import ModelRef
        from llmcli.remote import fetch_metadata

        folder, remote = fetch_metadata(ref.repo_id, ref.revision)
        ref = ModelRef("hf", folder)
    if ref.kind == "adapter":
        from llmcli.adapter_report import inspect_adapter

        data, shown = inspect_adapter(ref.path, base)
    elif ref.kind == "gguf":
        from llmcli.gguf_report import inspect_gguf

        data, shown = inspect_gguf(ref.path, tensors)
    else:
        from llmcli.inspect_report import Inspection

        data, shown = Inspection(ref.path, sections, tensors, depth, context, batch, device, remote).run()
    mode = output.choose_mode(json_out)
    if mode == "json":
        output.emit_json(data)
    else:
        output.show(shown, mode)
