"""`llmcli models`: the embedded default model and llmcli's cache of converted GGUF files."""

from __future__ import annotations

import typer

models_app = typer.Typer(
    help="The embedded default model, the cache of converted GGUF files and the kept compiled steps.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.callback()
def models(
    ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout.")
) -> None:
    """List the default model, where its cache lives and its size (also: rebuild, remove, prune)."""
    if ctx.invoked_subcommand is None:
        list_models(json_out)


def list_models(json_out: bool) -> None:
    from llmcli import output
    from llmcli.errors import LlmcliError
    from llmcli.modelfs.default_model import (
        DEFAULT_DIST,
        INSTALL_HINT,
        cache_home,
        cached_dir_for,
        cached_models,
        default_gguf,
        dir_size,
        is_complete,
    )

    try:
        gguf = default_gguf()
        default = {
            "package": DEFAULT_DIST,
            "gguf": str(gguf),
            "gguf_bytes": gguf.stat().st_size,
            "cache": str(cached_dir_for(gguf)),
            "converted": is_complete(cached_dir_for(gguf)),
        }
    except LlmcliError as exc:
        default = {"package": DEFAULT_DIST, "error": exc.one_line(), "install": INSTALL_HINT}
    cached = [{"path": str(p), "bytes": dir_size(p), "complete": is_complete(p)} for p in cached_models()]
    from llmcli.engine.load.dtype_probe import kept
    from llmcli.engine.step.store import listed

    data = {"cache_home": str(cache_home()), "default": default, "cached": cached, "compiled_steps": listed(),
            "kernel_measurements": kept()}  # fmt: skip
    from llmcli.reports import models as models_report

    output.present(models_report.build(data), json=json_out)


@models_app.command("rebuild")
def rebuild() -> None:
    """Convert the default model again (removes its cached directory first)."""
    from llmcli import output
    from llmcli.modelfs.default_model import cached_dir_for, default_gguf, ensure_converted, remove_cached
    from llmcli.modelfs.source import conversion_progress, progress_printer

    gguf = default_gguf()
    remove_cached([cached_dir_for(gguf)] if cached_dir_for(gguf).exists() else [])
    path = ensure_converted(gguf, conversion_progress(progress_printer(True)))
    output.write_stdout(f"{path}\n", flush=True)


@models_app.command("remove")
def remove() -> None:
    """Delete every converted model from llmcli's cache (the GGUF files themselves stay)."""
    from llmcli import output
    from llmcli.modelfs.default_model import cached_models, remove_cached
    from llmcli.units import human_bytes

    paths = cached_models()
    freed = remove_cached(paths)
    output.warn(f"removed {len(paths)} cached model(s), freed {human_bytes(freed)}")


@models_app.command("prune")
def prune(
    everything: bool = typer.Option(
        False, "--all", help="Every compiled decoding step, not only those no run can load again."
    ),  # fmt: skip
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; delete nothing."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> None:
    """Delete the compiled decoding steps that no run here can load again (another torch, transformers or CPU,
    a model directory that is gone, a build that did not finish)."""
    from llmcli import output
    from llmcli.engine.step.prune import remove, stale_steps
    from llmcli.reports import models as models_report
    from llmcli.units import human_bytes

    stale = stale_steps(everything=everything)
    freed = 0 if dry_run else remove(stale)
    data = {"dry_run": dry_run, "freed_bytes": freed,
            "steps": [{"path": str(s.path), "why": s.why, "bytes": s.bytes} for s in stale]}  # fmt: skip
    output.present(models_report.pruned(data), json=json_out)
    if dry_run:
        output.warn(f"would remove {len(stale)} compiled step(s), {human_bytes(sum(s.bytes for s in stale))}")
    else:
        output.warn(f"removed {len(stale)} compiled step(s), freed {human_bytes(freed)}")
