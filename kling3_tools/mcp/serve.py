"""Assembling the server (tools, resources, prompts, protocol methods) and running it: the service, the notifier
and an in-process poller for its whole life, on stdio or HTTP."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import (
    CompleteRequestParams,
    SetLevelRequestParams,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    ToolAnnotations,
    UnsubscribeRequestParams,
)

from .. import ops
from ..config import Settings
from ..errors import KlingError
from ..service import KlingService
from ..version import __version__
from . import player, prompts, protocol, stories, tools
from .http import BearerTokenMiddleware, is_loopback
from .notifier import McpNotifier
from .outputs import MODELS_URI, STORY_URI, TASK_URI
from .server import Deps, KlingMCPServer

log = logging.getLogger("kling3_tools.mcp")


READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=True)
OFFLINE = ToolAnnotations(readOnlyHint=True, openWorldHint=False)


def build_server(deps: Deps) -> KlingMCPServer:
    server = KlingMCPServer(
        deps,
        name="kling3",
        version=__version__,
        instructions=(
            "Make videos with Kling 3.0 and Kling Video O3. Check prices with estimate_video_cost before "
            "generate_video: every generate spends the user's credits. Videos take minutes; when "
            "generate_video answers 'running', call wait_for_video with its task_id."
        ),
        subscriptions=deps.notifier.bus,
        extensions=[player.extension(deps)],
    )
    server.add_tool(
        tools.generate_video,
        title="Generate a video (spends credits)",
        description=tools.GENERATE_DESCRIPTION,
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True),
        meta=player.BOUND,
    )
    server.add_tool(tools.wait_for_video, title="Wait for a video", annotations=READ_ONLY, meta=player.BOUND)
    server.add_tool(tools.get_video_status, title="Video status", annotations=READ_ONLY, meta=player.BOUND)
    server.add_tool(tools.estimate_video_cost, title="Estimate a video's cost", annotations=OFFLINE)
    server.add_tool(tools.list_video_models, title="List video models", annotations=OFFLINE)
    server.add_tool(tools.list_videos, title="List my videos", annotations=OFFLINE)
    server.add_tool(stories.plan_story, title="Plan a story (spends nothing)", annotations=OFFLINE)
    server.add_tool(
        stories.start_story,
        title="Start a story (spends credits)",
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True),
    )
    server.add_tool(stories.get_story_status, title="Story status", annotations=OFFLINE)
    server.resource(MODELS_URI, name="models", mime_type="application/json")(tools.models_resource)
    server.resource(TASK_URI, name="task", mime_type="application/json")(tools.task_resource)
    server.resource(STORY_URI, name="story", mime_type="application/json")(stories.story_resource)
    server.prompt(title="Make a video")(prompts.make_video)
    server.prompt(title="Edit or continue one of my videos")(prompts.remix_video)
    server.add_request_handler(
        "subscriptions/listen", SubscriptionsListenRequestParams, protocol.Listen(deps.notifier.bus)
    )
    server.add_request_handler("resources/subscribe", SubscribeRequestParams, protocol.subscribe)
    server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, protocol.unsubscribe)
    server.add_request_handler("logging/setLevel", SetLevelRequestParams, protocol.set_level)
    server.add_request_handler("completion/complete", CompleteRequestParams, protocol.complete)
    return server


@contextlib.asynccontextmanager
async def open_deps(settings: Settings, *, sandbox: bool) -> AsyncIterator[Deps]:
    observer = ops.observer_for(settings, "mcp")
    async with KlingService.open(settings, sandbox=sandbox, observer=observer) as service, ops.exposed(service):
        notifier = McpNotifier(InMemorySubscriptionBus())
        service.register(notifier)
        async with service.polling():
            yield Deps(service, notifier, settings)


async def serve(settings: Settings, *, sandbox: bool, transport: str, host: str, port: int) -> None:
    tokens = settings.mcp.bearer_tokens
    if transport == "http" and not is_loopback(host) and not tokens:
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
        if tokens:
            app = BearerTokenMiddleware(app, tokens)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        log.warning("kling3 MCP server listening on http://%s:%d/mcp", host, port)
        await uvicorn.Server(config).serve()
