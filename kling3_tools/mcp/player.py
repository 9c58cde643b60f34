"""The in-chat player (MCP Apps, `io.modelcontextprotocol/ui`): one self-contained page bound to the video
tools, and the app-only status tool it polls. Hosts that did not negotiate Apps see the same tools and
results as before (the binding is a `_meta` entry they ignore).

The page (`player/player.html`) is built from `player/player.js` and `player/player.src.html` with the
official `@modelcontextprotocol/ext-apps` App class by `scripts/build_player.sh`; nothing is fetched at run
time. Its CSP lets media come only from the hosts that can serve results (`media_hosts`)."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlsplit

from mcp.server.apps import Apps, ResourceCsp
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from ..domain.models import GenerateRequest
from .outputs import PlayerTask, to_video
from .server import Deps, deps_of
from .tools import own_record

PLAYER_URI = "ui://kling3/player.html"
BOUND = {"ui": {"resourceUri": PLAYER_URI}}  # the `_meta` of the tools the player shows


def origin(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL (never its user or password), else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def media_hosts(deps: Deps) -> list[str]:
    """Where a result may be played from: the API (and the sandbox), the storage's public address, and
    `[mcp] player_media_hosts` (the API's result CDN, which its documentation does not name)."""
    storage = deps.settings.storage
    signed_from = storage.public_base_url or storage.endpoint  # the endpoint signs when nothing is public
    candidates = [deps.service.base_url, signed_from, *deps.settings.mcp.player_media_hosts]
    return sorted({host for url in candidates if url and (host := origin(url))})


async def player_status(
    ctx: Context[Any, Any], task_id: Annotated[str, Field(description="The task the player shows.")]
) -> PlayerTask:
    """The player's view of one of this client's tasks, from the store the poller keeps current (no API
    call): what the card shows while it runs, the video when it is ready, and the request to make another."""
    deps = deps_of(ctx)
    record = await own_record(task_id, ctx)
    if record is None or record.origin.kind != "mcp":  # like list_videos: never a CLI, Discord or webhook task
        raise ToolError(f"Task {task_id} is not one of this client's videos.")
    video = await to_video(deps.service, record)
    video.video_urls = [url for url in video.video_urls if origin(url)]  # a page gets web addresses only
    request = GenerateRequest.fields_of(record.request)
    return PlayerTask(
        **video.model_dump(), prompt=record.request.get("prompt"), duration=record.duration, request=request
    )


def extension(deps: Deps) -> Apps:
    apps = Apps()
    html = resources.files(__package__).joinpath("player", "player.html").read_text()
    apps.add_html_resource(
        PLAYER_URI,
        html,
        name="player",
        title="Kling video player",
        description="A live card: progress and price while the video runs, then the video itself.",
        csp=ResourceCsp(resource_domains=media_hosts(deps), connect_domains=[]),
        prefers_border=True,
    )
    apps.tool(
        resource_uri=PLAYER_URI,
        visibility=["app"],
        title="Player status",
        annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    )(player_status)
    return apps
