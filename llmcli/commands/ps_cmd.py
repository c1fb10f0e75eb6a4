"""`llmcli ps`: what a running `llmcli serve` holds."""

from __future__ import annotations

import typer

from llmcli.commands import options as opt


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)


def ps(server: opt.ServerOpt = None, json_out: opt.JsonOpt = False) -> None:
    """Show a server's models (dtype, device, memory, idle time, reloads) and its queue."""
    from llmcli import client, output
    from llmcli.errors import UsageError
    from llmcli.reports import ps as ps_report

    if server is None:
        raise UsageError("ps needs a server: --server URL (or LLMCLI_SERVER); --server local for `serve --local`")
    output.present(ps_report.build(client.get(server, "/llmcli/v1/ps", needs="ps"), server), json=json_out)
