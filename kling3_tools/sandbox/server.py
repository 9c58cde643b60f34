"""Run the sandbox: in a background thread (embedded) or in the foreground (`kling3 sandbox`)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from .app import SandboxState, create_app
from .options import SandboxOptions


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets, and without
    # it every answer waits ~40 ms for a delayed ACK (headers and body go out as two writes).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _server(options: SandboxOptions | None, log_level: str) -> tuple[uvicorn.Server, SandboxState]:
    app = create_app(options)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
    return uvicorn.Server(config), app.state.sandbox


class SandboxServer:
    """The sandbox on a loopback port in a daemon thread; `url` is its base URL.

    `port=0` picks a free port. Use as a context manager, or `start()`/`stop()`.
    """

    def __init__(self, options: SandboxOptions | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server, self.state = _server(options, "warning")
        self._socket = _bind(host, port)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.url = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="kling3-sandbox", daemon=True
        )

    @property
    def api_key(self) -> str:
        return self.state.options.api_key

    def start(self) -> SandboxServer:
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

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_forever(options: SandboxOptions, host: str, port: int) -> None:
    """Serve in the foreground until interrupted (Ctrl-C)."""
    server, _ = _server(options, "info")
    server.run(sockets=[_bind(host, port)])
