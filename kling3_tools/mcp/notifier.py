"""Telling clients about their videos, each by the rules of the protocol era its session speaks.

- 2026-07-28: `subscriptions/listen` streams; the SDK's bus sends each stream the URIs it asked for.
- 2025-11-25 (and older): `notifications/resources/updated` for the URIs a session subscribed to with
  `resources/subscribe`, and, to the session that started the video, one `notifications/message` log line
  when it ends (with its URL), at or above the level the session set with `logging/setLevel` (default info).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from mcp.server.mcpserver import Context
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import LoggingLevel
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..domain.records import McpOrigin, Outcome, TaskRecord
from ..domain.story_record import StoryRecord, StoryState
from .outputs import finished_sentence, story_sentence, story_uri, task_uri

log = logging.getLogger("kling3_tools.mcp")

LEVELS: tuple[LoggingLevel, ...] = get_args(LoggingLevel)  # least severe first
MAX_SESSIONS = 1000


@dataclass
class Session:
    """A 2025-11-25 connection: the latest session proxy of it (the SDK hands one to each request, and it can
    still notify after that request ended), the URIs it subscribed to and the least severe level it wants."""

    proxy: Any
    uris: set[str] = field(default_factory=set)
    level: LoggingLevel = "info"

    def wants(self, level: LoggingLevel) -> bool:
        return LEVELS.index(level) >= LEVELS.index(self.level)


class McpNotifier:
    """The poller's notifier for tasks started over MCP."""

    kind = "mcp"

    def __init__(self, bus: InMemorySubscriptionBus, announce: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.bus = bus
        # Where a change is announced: the store, so that every replica on it hears it (`heard`) and tells its own
        # subscribers; without one, this process's alone.
        self.announce = announce or self.tell
        self._stdio_id = f"stdio-{uuid.uuid4().hex[:12]}"
        self._sessions: dict[str, Session] = {}  # by connection id; a session whose send fails is dropped
        self._telling: set[asyncio.Task[None]] = set()
        self.watchers: list[Callable[[str], Awaitable[None]]] = []  # told of every change, after the subscribers

    def heard(self, uri: str) -> None:
        """An announcement, this process's or another replica's: tell this process's subscribers of `uri`."""
        telling = asyncio.get_running_loop().create_task(self.tell(uri))
        self._telling.add(telling)
        telling.add_done_callback(self._telling.discard)

    async def tell(self, uri: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=uri))
        for connection, session in list(self._sessions.items()):
            if uri in session.uris:
                await self._send(connection, uri, session.proxy.send_resource_updated(uri))
        for watcher in self.watchers:
            try:
                await watcher(uri)
            except Exception as exc:  # a watcher's failure is not the poller's, nor another watcher's
                log.warning("could not tell the MCP tasks following %s: %s", uri, exc)

    async def send(self, connection: str, uri: str, notification: Any) -> None:
        """Send a 2025-11-25 session of this process a notification about `uri`, if it is still connected."""
        if session := self._sessions.get(connection):
            await self._send(connection, uri, session.proxy.send_notification(notification))

    def connection(self, ctx: Context[Any, Any]) -> str:
        """The id of the client connection behind `ctx` (one per process over stdio); a 2025-11-25 one is
        remembered, so it can be told when a video ends."""
        headers = ctx.headers  # over HTTP, a 2026-07-28 request belongs to no connection
        connection = self._stdio_id if headers is None else headers.get("mcp-session-id") or "stateless-http"
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            session = self._sessions.pop(connection, None) or Session(ctx.request_context.session)
            session.proxy = ctx.request_context.session
            self._sessions[connection] = session  # the most recently seen last
            while len(self._sessions) > MAX_SESSIONS:  # HTTP sessions end without a word: forget the oldest
                del self._sessions[next(iter(self._sessions))]
        return connection

    def _session(self, ctx: Context[Any, Any]) -> Session | None:
        return self._sessions.get(self.connection(ctx))

    def subscribe(self, ctx: Context[Any, Any], uri: str) -> None:
        if session := self._session(ctx):
            session.uris.add(uri)

    def unsubscribe(self, ctx: Context[Any, Any], uri: str) -> None:
        if session := self._session(ctx):
            session.uris.discard(uri)

    def set_level(self, ctx: Context[Any, Any], level: LoggingLevel) -> None:
        if session := self._session(ctx):
            session.level = level

    async def deliver(self, record: TaskRecord) -> None:
        data = {"message": finished_sentence(record), "task_id": record.task_id, "uri": task_uri(record.task_id)}
        await self._announce(task_uri(record.task_id), record.origin, record.outcome is Outcome.SUCCEEDED, data)

    async def progress(self, record: TaskRecord) -> None:
        await self._announce(task_uri(record.task_id), record.origin)

    async def deliver_story(self, record: StoryRecord) -> None:
        uri = story_uri(record.story_id)
        data = {"message": story_sentence(record), "story_id": record.story_id, "uri": uri}
        await self._announce(uri, record.origin, record.state is StoryState.SUCCEEDED, data)

    async def story_progress(self, record: StoryRecord) -> None:
        await self._announce(story_uri(record.story_id), record.origin)

    async def _announce(
        self, uri: str, origin: Any, succeeded: bool = False, final: dict[str, str] | None = None
    ) -> None:
        """`uri` changed: announce it to its subscribers (on every replica); with `final` (it ended), log that to
        the session that asked, where it is connected to this process."""
        await self.announce(uri)
        asked = origin.session if isinstance(origin, McpOrigin) else None
        level: LoggingLevel = "info" if succeeded else "warning"
        session = self._sessions.get(asked or "")
        if final and asked and session is not None and session.wants(level):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecated in 2026-07-28; 2025-11-25 clients show it
                await self._send(asked, uri, session.proxy.send_log_message(level=level, data=final, logger="kling3"))

    async def _send(self, connection: str, uri: str, sending: Awaitable[None]) -> None:
        try:
            await sending
        except Exception as exc:  # a closed session is not a reason to retry for a day
            log.info("could not notify MCP session %s of %s: %s", connection, uri, exc)
            self._sessions.pop(connection, None)
