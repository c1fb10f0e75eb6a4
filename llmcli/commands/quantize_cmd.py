"""`llmcli quantize MODEL OUT --to int4|int8`: a quantized copy of a model that llmcli and transformers (with
compressed-tensors) load as it is (compressed-tensors' layout, engine.quant.saved)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from llmcli.commands import options as opt
from llmcli.commands.completion import model_paths


class Target(StrEnum):
    int4 = "int4"
    int8 = "int8"


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize)


def quantize(
    model: str = typer.Argument(
        ..., help="A model directory, Hub id in the cache, or .gguf file.", autocompletion=model_paths
    ),  # fmt: skip
    out: Path = typer.Argument(..., help="The directory to write (must not exist)."),
    to: Target = typer.Option(
        ..., "--to", help="int4 or int8: per group (--group-size, default 32), the codes --quantize computes."
    ),
    group_size: opt.GroupSizeOpt = None,
    calibrate: Path | None = typer.Option(
        None, "--calibrate", help="A text whose activations weight the code search (an importance matrix)."
    ),
    trust_remote_code: opt.TrustOpt = False,
    json_out: opt.JsonOpt = False,
) -> None:
    """Write OUT with every linear layer but the output layer quantized, shard by shard (the model is never
    whole in memory, but for a run of the float model over --calibrate's text), atomically (nothing is left
    behind on failure); OUT's path on stdout."""
    from llmcli import output
    from llmcli.errors import LlmcliError
    from llmcli.modelfs.checkpoint import read_checkpoint
    from llmcli.modelfs.config import load_config
    from llmcli.modelfs.source import resolve_model
    from llmcli.plan import Quantize, check_group_size

    check_group_size(group_size, Quantize(str(to)))
    if out.exists():
        raise LlmcliError("already exists; quantize writes a new directory", path=out)
    source = resolve_model(model, verbose=output.stderr_is_tty())
    config, ckpt = load_config(source.path), read_checkpoint(source.path)
    if config.get("quantization_config"):
        raise LlmcliError("the model is already quantized (config.json has a quantization_config)", path=source.path)
    if ckpt.kind != "safetensors":
        raise LlmcliError("quantize reads safetensors weights; this directory has none", path=source.path)
    from llmcli.engine.quant.choice import DEFAULT_GROUP_SIZE

    chunks = _calibration_windows(source, calibrate, trust=trust_remote_code) if calibrate else None
    group = group_size or DEFAULT_GROUP_SIZE
    with output.spinner(f"Quantizing {source.path.name} to {to}…", enabled=output.stderr_is_tty()):
        choice = _export(source, out, ckpt, config, scheme=str(to), group=group, trust=trust_remote_code,
                         chunks=chunks)  # fmt: skip
    output.stderr_text(f"{out}: {choice.summary()}")
    if json_out:
        output.emit_json({"path": str(out), "source": str(source.path), **choice.describe()})
    else:
        output.write_stdout(f"{out}\n")


def _calibration_windows(source: object, path: Path, *, trust: bool) -> list[list[int]]:
    """The calibration text's token windows, checked before any weight is read."""
    from llmcli.engine.load.loader import load_tokenizer
    from llmcli.engine.quant import calibration
    from llmcli.plan import LoadSpec

    text = calibration.read_text(path)
    return calibration.windows(load_tokenizer(source, spec=LoadSpec(trust_remote_code=trust)), text, path)


def _export(source: object, out: Path, ckpt: object, config: dict, *, scheme: str, group: int, trust: bool,
            chunks: list[list[int]] | None) -> object:  # fmt: skip
    from llmcli.engine.quant import export, while_loading
    from llmcli.engine.quant.choice import targets
    from llmcli.errors import LlmcliError
    from llmcli.quiet import quiet_transformers

    quiet_transformers()
    path = source.path
    model = while_loading.empty_model(path, dtype="float32", trust=trust, attn={})
    why = while_loading.mismatch(model, ckpt)
    if why is not None:
        raise LlmcliError(f"cannot quantize by name: {why}", path=path)
    importance = None
    if chunks:
        names, _ = targets(model, scheme=scheme, group_size=group, device="cpu")
        importance = _importance(source, names, chunks, trust=trust)
    return export.export(path, out, ckpt, model, scheme=scheme, group_size=group, config=config,
                         importance=importance)  # fmt: skip


def _importance(source: object, names: list[str], chunks: list[list[int]], *, trust: bool) -> dict:
    """The float model, loaded once to run the calibration windows, then let go before any layer is written."""
    from llmcli.engine.load.loader import load
    from llmcli.engine.quant import calibration
    from llmcli.plan import LoadSpec

    return calibration.importance(load(source, LoadSpec(trust_remote_code=trust)).model, names, chunks)
