"""Running the server on stdio or HTTP. Its settings and its core (`core.py`) load when a request needs them
over stdio (`server.py` says why), before the server listens over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp.server.apps import Apps
from mcp.shared.exceptions import MCPError
from mcp_types import EmptyResult

from ..domain.errors import KlingError
from ..launch import (
    EXIT_INTERRUPTED,
    STOP_SIGNALS,
    end_at_once_on,
    end_now,
    exempt_loaded_objects_from_gc,
    on_stop_signals,
)
from ..version import __version__
from . import manifest
from .http import BearerTokenMiddleware, is_loopback
from .server import PROTOCOL_METHODS, WARM_UP_SECONDS, Deps, KlingMCPServer

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("kling3_tools.mcp")


def shell(
    read_settings: Callable[[], Settings],
    *,
    sandbox: bool,
    warm_up_seconds: float | None = WARM_UP_SECONDS,
    **server_options: Any,
) -> KlingMCPServer:
    """The server as the handshake sees it: its settings (`read_settings()`, which raises `UsageError`) are read
    when its core opens, so that a bad one is said in every answer that needs the core and a fixed file is
    read again at the next."""

    def open_core(server: KlingMCPServer) -> AbstractAsyncContextManager[Deps]:
        from .core import opened  # the core's modules load with it, at first need

        return opened(server, read_settings(), sandbox=sandbox)

    server = KlingMCPServer(
        open_core,
        warm_up_seconds=warm_up_seconds,
        name="kling3",
        version=__version__,
        instructions=(
            "Make videos with Kling 3.0 and Kling Video O3. Check prices with estimate_video_cost before "
            "generate_video: every generate spends the user's credits. Videos take minutes; when "
            "generate_video answers 'running', call wait_for_video with its task_id."
        ),
        extensions=[Apps()],  # its page and tool are the core's
        **server_options,  # over HTTP with [mcp.auth]: the SDK's resource-server settings and our verifier
    )
    for method, params_type in PROTOCOL_METHODS.items():
        server.add_request_handler(method, params_type, not_yet_loaded)
    return server


@contextlib.asynccontextmanager
async def loaded_server(settings: Settings, *, sandbox: bool) -> AsyncIterator[KlingMCPServer]:
    """A server whose core is open, for a test or the manifest (the served one opens it at first need)."""
    server = shell(lambda: settings, sandbox=sandbox, warm_up_seconds=None)
    async with server.core_held():
        await server.core()
        yield server


async def current_manifest() -> str:
    """The manifest of this code: the tools of a server loaded on a throwaway sandbox and store."""
    from ..config import Settings

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.load(store={"url": f"sqlite:///{Path(folder) / 'manifest.db'}"})
        async with loaded_server(settings, sandbox=True) as server:
            return manifest.dumped(await server.list_tools())


async def not_yet_loaded(ctx: Any, params: Any) -> EmptyResult:
    raise AssertionError("the core registers this method before any request reaches it")


async def serve(read_settings: Callable[[], Settings], *, sandbox: bool, transport: str, host: str, port: int) -> None:
    """Over stdio, the settings are read when the core opens; over HTTP, first (bad ones: exit 2)."""
    if transport == "stdio":
        server = served(shell(read_settings, sandbox=sandbox))
        async with server.core_held():
            interrupted = await until_stdin_closes_or_a_signal(server)
    else:
        settings = read_settings()
        tokens, auth = settings.mcp.bearer_tokens, settings.mcp.auth
        if not is_loopback(host) and not tokens and not auth.enabled:
            raise KlingError(
                f"Refusing to listen on {host} without [mcp.auth] (each person signs in) or [mcp] http_token."
            )
        if tokens and auth.enabled:
            raise KlingError("[mcp] http_token and [mcp.auth] are two ways in: keep one.")
        gate: Callable[[Any], Any] | None = None
        options: dict[str, Any] = {}
        if auth.enabled:
            from .oauth import OAuthVerifier, ScopeGate, auth_settings, metadata_url, needs_generate

            verifier = OAuthVerifier(auth)
            options = {"auth": auth_settings(auth), "token_verifier": verifier}

            def gate(app: Any) -> Any:
                return ScopeGate(app, verifier, needs_generate=needs_generate(), metadata_url=metadata_url(auth))

        server = shell(lambda: settings, sandbox=sandbox, **options)
        async with server.core_held():
            interrupted = await serve_http(server, host, port, tokens, gate)
    if interrupted:  # the core is closed; end now (the SDK's stdin reader is a thread that no signal ends)
        end_now(EXIT_INTERRUPTED)


def served(server: KlingMCPServer) -> KlingMCPServer:
    """The server of this process over stdio: what its core loads lives as long as the process."""
    open_core = server.open_core

    @contextlib.asynccontextmanager
    async def opened_for_life(server: KlingMCPServer) -> AsyncIterator[Deps]:
        async with open_core(server) as deps:
            exempt_loaded_objects_from_gc()
            yield deps

    server.open_core = opened_for_life
    return server


async def until_stdin_closes_or_a_signal(server: KlingMCPServer) -> bool:
    """Serve on stdio until the client closes stdin (False), or Ctrl-C or SIGTERM (True)."""
    signalled = asyncio.Event()
    on_stop_signals(signalled.set)
    serving = asyncio.create_task(server.run_stdio_async())
    waiting = asyncio.create_task(signalled.wait())
    await asyncio.wait([serving, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if not signalled.is_set():
        serving.result()
    return signalled.is_set()


async def serve_http(
    server: KlingMCPServer, host: str, port: int, tokens: list[str], gate: Callable[[Any], Any] | None = None
) -> bool:
    """The core first (a failure is exit 1), then streamable HTTP until Ctrl-C or SIGTERM (True).

    uvicorn stops gracefully on a signal, then raises it again under the handler it found: with Python's own,
    SIGTERM ended the process before the core was closed (leases held until they run out). Ours only notes
    it, from before the core opens (a signal meanwhile: no serving at all)."""
    signalled: list[int] = []
    found = {signum: signal.signal(signum, lambda signum, _: signalled.append(signum)) for signum in STOP_SIGNALS}
    try:
        try:
            await server.core()
        except MCPError as exc:
            raise KlingError(exc.message) from None
        if not signalled:
            import uvicorn

            app: Any = server.streamable_http_app(host=host)
            if tokens:
                app = BearerTokenMiddleware(app, tokens)
            if gate is not None:
                app = gate(app)
            config = uvicorn.Config(app, host=host, port=port, log_level="warning")
            log.warning("kling3 MCP server listening on http://%s:%d/mcp", host, port)
            exempt_loaded_objects_from_gc()  # the core, uvicorn and the app: they live as long as the process
            await uvicorn.Server(config).serve()
    finally:
        for signum, handler in found.items():
            signal.signal(signum, handler)
    if signalled:
        end_at_once_on()  # one more while the core closes
    return bool(signalled)
