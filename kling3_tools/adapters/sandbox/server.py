"""Run the sandbox: in a background thread (embedded) or in the foreground (`kling3 sandbox`)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp

from .app import create_app
from .options import SandboxOptions
from .state import SandboxState


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets, and without
    # it every answer waits ~40 ms for a delayed ACK (headers and body go out as two writes).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


# A stop waits this long for requests in flight (a client killed mid-request may hold one open for good).
GRACEFUL_STOP_SECONDS = 1


def _uvicorn(app: ASGIApp, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, lifespan="off", timeout_graceful_shutdown=GRACEFUL_STOP_SECONDS
    )
    return uvicorn.Server(config)


class ThreadedServer:
    """An ASGI app on a loopback port in a daemon thread; `url` is its base URL.

    `port=0` picks a free port. Use as a context manager, or `start()`/`stop()`.
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _uvicorn(app, "warning")
        self._socket = _bind(host, port)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.url = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="kling3-sandbox", daemon=True
        )

    def start(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SandboxServer(ThreadedServer):
    """The sandbox in a background thread; `state` is its live `SandboxState`."""

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_path: Path | None = None,
    ) -> None:
        app = create_app(options, state_path=state_path)
        self.state: SandboxState = app.state.sandbox
        super().__init__(app, host=host, port=port)

    @property
    def api_key(self) -> str:
        return self.state.options.api_key

    def stop(self) -> None:
        super().stop()
        self.state.close()


def serve_forever(options: SandboxOptions, host: str, port: int) -> None:
    """Serve the sandbox in the foreground until interrupted (Ctrl-C)."""
    _uvicorn(create_app(options), "info").run(sockets=[_bind(host, port)])
