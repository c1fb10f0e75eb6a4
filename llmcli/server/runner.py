"""Running the app: uvicorn on a TCP port or a Unix socket of mode 0600, with a drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmcli.errors import LlmcliError


def unix_socket(path: str) -> socket.socket:
    """A listening socket only its owner can connect to: created under umask 177, never chmod-ed afterwards
    (uvicorn's own --uds makes it 0666). A stale file from a server that died is replaced."""
    target = Path(path)
    prepare_socket_dir(path)
    if target.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            target.unlink()  # nobody listens: left behind by a server that did not exit cleanly
        else:
            raise LlmcliError("a server already listens on this socket", path=path, hint="stop it, or pick --socket")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise LlmcliError(f"cannot listen on this socket: {exc.strerror or exc}", path=path) from None
    finally:
        os.umask(previous)
    return sock


def prepare_socket_dir(path: str) -> None:
    """The socket's folder, made if missing; checked before any model loads."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlmcliError(f"cannot make the socket's folder: {exc.strerror or exc}", path=path) from None


def run(app: Any, *, host: str, port: int, uds: str | None, announce: Callable[[str], None]) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=60)
    server = _draining_server_class()(config)
    sockets = [unix_socket(uds)] if uds else None

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            if uds:
                announce(f"unix:{uds}")
            else:
                announce(f"http://{host}:{server.servers[0].sockets[0].getsockname()[1]}")
        await task

    try:
        asyncio.run(main())
    finally:
        if uds:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uds)


def _draining_server_class() -> type:
    """Built on first use, so that uvicorn loads only when a server starts."""
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
