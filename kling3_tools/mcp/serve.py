"""Running the server: the service, the notifier and an in-process poller for its whole life, on stdio or HTTP."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.subscriptions import InMemorySubscriptionBus

from ..config import Settings
from ..errors import KlingError
from ..service import KlingService
from .http import BearerTokenMiddleware, is_loopback
from .notifier import McpNotifier
from .server import Deps
from .tools import build_server

log = logging.getLogger("kling3_tools.mcp")


@contextlib.asynccontextmanager
async def open_deps(settings: Settings, *, sandbox: bool) -> AsyncIterator[Deps]:
    async with KlingService.open(settings, sandbox=sandbox) as service:
        notifier = McpNotifier(InMemorySubscriptionBus())
        service.register(notifier)
        async with service.polling():
            yield Deps(service, notifier, settings)


async def serve(settings: Settings, *, sandbox: bool, transport: str, host: str, port: int) -> None:
    token = settings.mcp.http_token.get_secret_value() if settings.mcp.http_token else None
    if transport == "http" and not is_loopback(host) and not token:
        raise KlingError(f"Refusing to listen on {host} without [mcp] http_token (KLING_MCP__HTTP_TOKEN).")
    async with open_deps(settings, sandbox=sandbox) as deps:
        server = build_server(deps)
        if sandbox:
            log.warning("kling3 MCP server on the embedded sandbox at %s: no credits are spent", deps.service.base_url)
        if transport == "stdio":
            await server.run_stdio_async()
            return
        import uvicorn

        app: Any = server.streamable_http_app(host=host)
        if token:
            app = BearerTokenMiddleware(app, token)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        log.warning("kling3 MCP server listening on http://%s:%d/mcp", host, port)
        await uvicorn.Server(config).serve()
