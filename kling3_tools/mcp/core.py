"""The server's core, loaded at its first need (`server.py`): the service, the notifier and an in-process
poller for the server's whole life, and the tools, resources, prompts and protocol methods that use them."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import Context
from mcp_types import SubscriptionsListenRequestParams, ToolAnnotations

from .. import ops
from ..config import Settings
from ..service import KlingService
from . import making, player, prompts, protocol, stories, tools
from .notifier import McpNotifier
from .outputs import MODELS_URI, STORY_URI, TASK_URI
from .server import PROTOCOL_METHODS, Deps, KlingMCPServer
from .task_views import TaskViews

log = logging.getLogger("kling3_tools.mcp")

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=True)
OFFLINE = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
SPENDS = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True)
CREATES = SPENDS  # makes something at the provider, and charges nothing
DELETES = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=True)


def register(server: KlingMCPServer, deps: Deps) -> None:
    server.add_tool(
        tools.generate_video,
        title="Generate a video (spends credits)",
        description=tools.GENERATE_DESCRIPTION,
        annotations=SPENDS,
        meta=player.BOUND,
    )
    server.add_tool(making.extend_video, title="Extend a video (spends credits)", annotations=SPENDS, meta=player.BOUND)
    server.add_tool(making.lip_sync, title="Lip-sync a video (spends credits)", annotations=SPENDS, meta=player.BOUND)
    server.add_tool(making.create_character, title="Make a character", annotations=CREATES)
    server.add_tool(making.list_characters, title="List my characters", annotations=OFFLINE)
    server.add_tool(making.delete_character, title="Delete a character", annotations=DELETES)
    server.add_tool(tools.wait_for_video, title="Wait for a video", annotations=READ_ONLY, meta=player.BOUND)
    server.add_tool(tools.get_video_status, title="Video status", annotations=READ_ONLY, meta=player.BOUND)
    server.add_tool(tools.estimate_video_cost, title="Estimate a video's cost", annotations=OFFLINE)
    server.add_tool(tools.list_video_models, title="List video models", annotations=OFFLINE)
    server.add_tool(tools.list_videos, title="List my videos", annotations=OFFLINE)
    server.add_tool(stories.plan_story, title="Plan a story (spends nothing)", annotations=OFFLINE)
    server.add_tool(stories.start_story, title="Start a story (spends credits)", annotations=SPENDS)
    server.add_tool(stories.get_story_status, title="Story status", annotations=OFFLINE)
    # The player's page and tool, as the SDK applies an extension's (the extension itself, which the handshake
    # advertises, was given to the server before its core loaded).
    apps = player.extension(deps)
    for tool in apps.tools():
        server.add_tool(tool.fn, meta=tool.meta, **tool.kwargs)
    for resource in apps.resources():
        server.add_resource(resource.resource)
    server.resource(MODELS_URI, name="models", mime_type="application/json")(
        functools.partial(tools.models_resource, deps)
    )
    server.resource(TASK_URI, name="task", mime_type="application/json")(tools.task_resource)
    server.resource(STORY_URI, name="story", mime_type="application/json")(stories.story_resource)
    server.prompt(title="Make a video")(prompts.make_video)
    server.prompt(title="Edit or continue one of my videos")(prompts.remix_video)
    server.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, protocol.Listen(server.bus))
    handlers: dict[str, Callable[[Context[Any, Any], Any], Awaitable[Any]]] = {
        "resources/subscribe": protocol.subscribe,
        "resources/unsubscribe": protocol.unsubscribe,
        "logging/setLevel": protocol.set_level,
        "completion/complete": protocol.complete,
    }
    for method, params_type in PROTOCOL_METHODS.items():
        server.add_request_handler(method, params_type, handlers[method])


@contextlib.asynccontextmanager
async def opened(server: KlingMCPServer, settings: Settings, *, sandbox: bool) -> AsyncIterator[Deps]:
    observer = ops.observer_for(settings, "mcp")
    async with KlingService.open(settings, sandbox=sandbox, observer=observer) as service, ops.exposed(service):
        notifier = McpNotifier(server.bus, announce=service.store.announce)
        service.register(notifier)
        deps = Deps(service, notifier, settings)
        deps.task_views = views = TaskViews(server, deps)
        notifier.watchers.append(views.changed)
        register(server, deps)
        if sandbox:
            log.warning("kling3 MCP server on the embedded sandbox at %s: no credits are spent", service.base_url)
        async with service.store.watch_announcements(notifier.heard), service.polling():
            yield deps
