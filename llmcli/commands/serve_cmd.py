"""`llmcli serve`: load models once and answer over HTTP (OpenAI-compatible, and llmcli's own endpoint)."""

from __future__ import annotations

import ipaddress
import os

import typer

from llmcli.commands.model_options import PLACEMENT, ModelArgs, model_options
from llmcli.errors import UsageError
from llmcli.server.tool_template import PARSERS

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


def parse_duration(text: str) -> float | None:
    """'10m', '30s', '2h', '90' (seconds) → seconds; '-1' or 'never' → None (keep the model loaded)."""
    value = text.strip().lower()
    if value in ("never", "-1", "inf"):
        return None
    scale = {"s": 1, "m": 60, "h": 3600}.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise UsageError(f"--keep-alive {text}: expected a duration such as 30s, 10m, 2h, or never") from None
    if seconds < 0:
        raise UsageError(f"--keep-alive {text}: a duration cannot be negative (never: keep it loaded)")
    return seconds


def read_chat_template(path: str) -> str:
    """--chat-template's file, read and parsed as Jinja before any model loads."""
    import jinja2

    try:
        text = open(path, encoding="utf-8").read()  # noqa: SIM115 - read at once
        jinja2.Environment().parse(text)
    except OSError as exc:
        raise UsageError(f"--chat-template {path}: cannot read it ({exc.strerror})") from None
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"--chat-template {path}: line {exc.lineno}: {exc.message}") from None
    return text


@model_options("device", *PLACEMENT, "dtype", "quantize", "attn", "threads", "compile")
def serve(
    models: list[str] = typer.Option(
        None, "--model", "-m", help="A model to serve (repeatable); default: the embedded model, named 'default'."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; other than loopback needs --api-key."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port, printed)."),
    socket: str = typer.Option(None, "--socket", help="Listen on this Unix socket (mode 0600) instead of a port."),
    local: bool = typer.Option(
        False, "--local", help="Listen on the per-user socket in LLMCLI_HOME (clients: --server local)."
    ),
    api_key: str = typer.Option(
        None, "--api-key", envvar="LLMCLI_API_KEY", help="Demand 'Authorization: Bearer KEY' on every request."
    ),
    max_tokens: int = typer.Option(2048, "--max-tokens", min=1, help="Cap on any request's max_tokens."),
    queue_size: int = typer.Option(64, "--queue-size", min=1, help="Requests running or waiting; beyond: 503."),
    timeout: float = typer.Option(300.0, "--timeout", min=1, help="Seconds a request may take."),
    max_batch: int = typer.Option(
        None,
        "--max-batch",
        min=1,
        help="At most this many requests decode together (default: as many as the KV cache memory holds).",
    ),
    kv_memory: str = typer.Option(
        None,
        "--kv-memory",
        help="Memory the batch's KV cache may take, such as 4GiB (default: half the memory free at start).",
    ),
    batch_invariant: bool = typer.Option(
        False,
        "--batch-invariant",
        help="Batch only where every output equals its solo run (float32 on CPU; a lone row computes with the "
        "batched kernel); else one request at a time.",
    ),
    prepack: bool | None = typer.Option(
        None,
        "--prepack/--no-prepack",
        help="On the CPU, reorder the linear weights for oneDNN at load (each original let go once reordered, "
        "unless something else reads it). Default: where it measures faster on this CPU, else in float32.",
        show_default=False,
    ),
    keep_alive: str = typer.Option(
        "never", "--keep-alive", help="Unload a model idle this long (30s, 10m, 2h); the next request reloads it."
    ),
    chat_template: str = typer.Option(
        None, "--chat-template", help="A Jinja chat template file used instead of the model's (e.g. one with tools)."
    ),
    tool_parser: str = typer.Option(
        None,
        "--tool-parser",
        help="How tool calls are read from the output: hermes, llama3_json or mistral (default: from the template).",
    ),
    *,
    model_args: ModelArgs,
) -> None:
    """Serve models over HTTP: /v1/completions, /v1/chat/completions (SSE streams), /v1/models, /health."""
    from llmcli import output
    from llmcli.genargs import DecodingFlags, build_generate_kwargs
    from llmcli.plan import check_combinations, parse_amount

    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"--host {host} would let anyone who can reach this machine run the models; pass --api-key "
            "(or set LLMCLI_API_KEY), or bind 127.0.0.1"
        )
    if socket and local:
        raise UsageError("--socket and --local both name the socket; give one")
    idle = parse_duration(keep_alive)
    template = read_chat_template(chat_template) if chat_template else None
    if tool_parser is not None and tool_parser not in PARSERS:
        raise UsageError(f"--tool-parser {tool_parser}: expected one of {', '.join(PARSERS)}")
    kv_budget = parse_amount(kv_memory, option="--kv-memory") if kv_memory else None
    names = [served_name(m) for m in models or [None]]
    if len(set(names)) != len(names):
        raise UsageError(f"two models would be served under one name ({', '.join(names)}); rename a directory")
    base_kwargs = build_generate_kwargs(DecodingFlags(compile=model_args.compile))
    packs = prepack  # --compile on the CPU keeps the batches' product (server.compiled_step)
    # a lone row is not sliced across the threads any more: with the weights reordered on the engine thread,
    # oneDNN's product was the faster for it too (docs/serve.md); replay still loads an older record's way
    spec = model_args.spec(serving=True, prepack=packs)
    check_combinations(spec=spec, kwargs=base_kwargs)
    from llmcli.client import local_socket
    from llmcli.engine.load.loader import load
    from llmcli.modelfs.source import resolve_model
    from llmcli.server.app import build_app
    from llmcli.server.models import Served
    from llmcli.server.runner import prepare_socket_dir, run
    from llmcli.server.service import ServeSettings

    uds = local_socket() if local else socket
    if uds:
        prepare_socket_dir(uds)
    served = {}
    for name, arg in zip(names, models or [None], strict=True):
        source = resolve_model(arg, verbose=spec.show_progress)
        served[name] = Served(name, lambda source=source: load(source, spec), keep_alive=idle,
                              chat_template=template, tool_parser=tool_parser)  # fmt: skip
    loaded = [s.loaded for s in served.values()]
    from llmcli.server.compiled_step import offer, prepare

    compiling = model_args.compile and all(m.device == "cpu" for m in loaded)
    if compiling:
        base_kwargs = build_generate_kwargs(DecodingFlags())  # requests batch; lone rows take the step
    at_start = prepare if compiling else offer if model_args.compile is None else None
    for name, model in zip(served, loaded, strict=True) if at_start else []:
        said = at_start(model)  # --compile: the steps built; no flag: the offer to build them, once
        if said:
            output.warn(f"{name}: {said}")
    settings = ServeSettings(
        api_key,
        max_tokens,
        queue_size=queue_size,
        timeout_seconds=timeout,
        base_kwargs=base_kwargs,
        batch_invariant=batch_invariant,
        max_batch=max_batch,
        kv_budget_bytes=kv_budget,
        keep_alive_seconds=idle,
        plain_step=model_args.compile is False,
    )
    from llmcli.engine.batch.scheduler import invariant_batches

    if batch_invariant and not all(invariant_batches(m) for m in loaded):
        output.warn("--batch-invariant: batches only float32 weights on the CPU; these requests run one at a time")

    def announce(where: str) -> None:
        output.warn(f"serving {', '.join(served)} at {where} (OpenAI API under /v1); Ctrl-C stops")

    run(build_app(served, settings), host=host, port=port, uds=uds, announce=announce)
