"""What the ops endpoints and the callback receiver listen with: a socket bound up front (a taken port is a
configuration error, not a crash) and a uvicorn server that leaves signals to the process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

from ..launch import UsageError

MAX_CONNECTIONS = 32  # at once; more are refused (503) rather than held
SHUTDOWN_SECONDS = 2  # open connections get this long once the process stops, then are cut


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the process's own SIGTERM handling (a graceful stop of its poller) stays in charge


def bound(setting: str, listen: str, host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port is a configuration error (exit 2, which also stops
    `--workers` from restarting the worker) rather than uvicorn ending the process. `::` takes IPv4 too."""
    try:
        if ":" in host:
            return socket.create_server((host, port), family=socket.AF_INET6, dualstack_ipv6=host == "::")
        return socket.create_server((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {setting} = {listen}: {exc.strerror or exc}") from None


@contextlib.asynccontextmanager
async def serve_on(listener: socket.socket, app: Any) -> AsyncIterator[None]:
    """`app` served on `listener` while inside; then its connections get `SHUTDOWN_SECONDS` and are cut."""
    config: Any = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        log_level="warning",
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,  # a client that never reads must not keep the process
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        yield
    finally:
        server.should_exit = True
        await task
        listener.close()
