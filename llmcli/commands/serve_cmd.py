"""`llmcli serve`: load models once and answer over HTTP (OpenAI-compatible, and llmcli's own endpoint)."""

from __future__ import annotations

import ipaddress
import os

import typer

from llmcli.commands.model_options import ModelArgs, model_options
from llmcli.errors import UsageError

LOOPBACK_NAMES = ("localhost",)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def served_name(arg: str | None) -> str:
    """What clients call a model: 'default', or the directory's (or .gguf file's) name."""
    if arg is None:
        return "default"
    name = os.path.basename(os.path.normpath(arg))
    return name.removesuffix(".gguf") or arg


@model_options("device", "dtype", "quantize", "attn", "threads", "compile")
def serve(
    models: list[str] = typer.Option(
        None, "--model", "-m", help="A model to serve (repeatable); default: the embedded model, named 'default'."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; other than loopback needs --api-key."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port, printed)."),
    api_key: str = typer.Option(
        None, "--api-key", envvar="LLMCLI_API_KEY", help="Demand 'Authorization: Bearer KEY' on every request."
    ),
    max_tokens: int = typer.Option(2048, "--max-tokens", min=1, help="Cap on any request's max_tokens."),
    queue_size: int = typer.Option(16, "--queue-size", min=1, help="Requests running or waiting; beyond: 503."),
    timeout: float = typer.Option(300.0, "--timeout", min=1, help="Seconds a request may take."),
    max_batch: int = typer.Option(
        None,
        "--max-batch",
        min=1,
        help="Greedy requests with the same flags that arrive together share one generate() call, up to this "
        "many (default: 8 for float32 weights, where outputs stay identical to a solo run; else 1).",
    ),
    *,
    model_args: ModelArgs,
) -> None:
    """Serve models over HTTP: /v1/completions, /v1/chat/completions (SSE streams), /v1/models, /health."""
    from llmcli import output
    from llmcli.genargs import DecodingFlags, build_generate_kwargs
    from llmcli.plan import check_combinations

    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"--host {host} would let anyone who can reach this machine run the models; pass --api-key "
            "(or set LLMCLI_API_KEY), or bind 127.0.0.1"
        )
    names = [served_name(m) for m in models or [None]]
    if len(set(names)) != len(names):
        raise UsageError(f"two models would be served under one name ({', '.join(names)}); rename a directory")
    base_kwargs = build_generate_kwargs(DecodingFlags(compile=model_args.compile))
    spec = model_args.spec()
    check_combinations(spec=spec, kwargs=base_kwargs)
    from llmcli.engine.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.server.app import Served, ServeSettings, build_app

    served = {}
    for name, arg in zip(names, models or [None], strict=True):
        served[name] = Served(name, load(resolve_model(arg, verbose=spec.show_progress), spec))
    settings = ServeSettings(
        api_key,
        max_tokens,
        queue_size=queue_size,
        timeout_seconds=timeout,
        base_kwargs=base_kwargs,
        max_batch=batch_size(max_batch, [s.loaded for s in served.values()], output),
    )
    _run(build_app(served, settings), host, port, list(served), output)


AUTO_BATCH = 8


def batch_size(asked: int | None, loaded: list, output) -> int:
    """float32 batches keep every output identical to its solo run (measured); other dtypes batch on request."""
    import torch

    exact = all(m.model.dtype == torch.float32 for m in loaded)
    if asked is None:
        return AUTO_BATCH if exact else 1
    if asked > 1 and not exact:
        output.warn(
            f"--max-batch {asked}: in {loaded[0].model.dtype} a batched output may differ from its solo run "
            "(float32 keeps them identical)"
        )
    return asked


def _run(app, host: str, port: int, names: list[str], output) -> None:
    import asyncio

    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=60)
    server = _draining_server_class()(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            output.warn(f"serving {', '.join(names)} at http://{host}:{bound} (OpenAI API under /v1); Ctrl-C stops")
        await task

    asyncio.run(main())


def _draining_server_class():
    """Built on first use, so that uvicorn loads only when a server starts."""
    import contextlib
    import signal

    import uvicorn

    class DrainingServer(uvicorn.Server):
        """SIGTERM or SIGINT: stop accepting, finish the requests in flight, exit 0 (uvicorn itself re-raises
        the signal after its shutdown, which ends the process with -15). A second signal ends it at once."""

        @contextlib.contextmanager
        def capture_signals(self):
            def handle(_signum, _frame):
                if self.should_exit:
                    os._exit(130)
                self.should_exit = True

            previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in previous.items():
                    signal.signal(s, h)

    return DrainingServer
