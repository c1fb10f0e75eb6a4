"""Entry point: the Typer app, its subcommands, and the mapping of every failure to an exit code."""

from __future__ import annotations

import sys

import typer

from llmcli import __version__
from llmcli.errors import LlmcliError, report


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


app = typer.Typer(
    name="llmcli",
    help="Inspect Hugging Face models without loading them, and generate text from the terminal.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Rich help panels on a terminal; plain help when piped (greppable, and no Rich import: ~0.1 s less).
    rich_markup_mode="rich" if _stdout_is_tty() else None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """llmcli: the truth about a model without loading it, and generate() from the shell."""


def _register() -> None:
    # Command modules import only typer and llmcli's light layers at import time; torch loads on use.
    from llmcli.commands import (
        bench_cmd,
        chat_cmd,
        compare_cmd,
        diff_cmd,
        dpo_cmd,
        generate_cmd,
        inspect_cmd,
        lens_cmd,
        models_cmd,
        probe_cmd,
        ps_cmd,
        quantize_cmd,
        replay_cmd,
        reward_cmd,
        sample_cmd,
        serve_cmd,
        tokens_cmd,
    )

    inspect_cmd.register(app)
    diff_cmd.register(app)
    generate_cmd.register(app)
    chat_cmd.register(app)
    tokens_cmd.register(app)
    probe_cmd.register(app)
    lens_cmd.register(app)
    compare_cmd.register(app)
    quantize_cmd.register(app)
    dpo_cmd.register(app)
    reward_cmd.register(app)
    sample_cmd.register(app)
    replay_cmd.register(app)
    bench_cmd.register(app)
    models_cmd.register(app)
    serve_cmd.register(app)
    ps_cmd.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    try:
        # Not standalone: Typer's own usage errors come here too, so that every error ends in one place.
        code = app(args=argv, prog_name="llmcli", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (LlmcliError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the single place errors end
        code = report(exc)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
