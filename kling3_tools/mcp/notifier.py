"""Delivery back to the assistant: when a task ends, a resource-updated event and a log line with the URL."""

from __future__ import annotations

import logging
import uuid
import warnings
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ResourceUpdated

from ..records import McpOrigin, Outcome, TaskRecord
from .outputs import finished_sentence, task_uri

log = logging.getLogger("kling3_tools.mcp")


class McpNotifier:
    """The poller's notifier for tasks started over MCP."""

    kind = "mcp"

    def __init__(self, bus: InMemorySubscriptionBus) -> None:
        self.bus = bus
        self._stdio_id = f"stdio-{uuid.uuid4().hex[:12]}"
        # The SDK hands each request its own session proxy; the latest one of a connection can still
        # notify that connection after the request ended. Dropped when a send fails.
        self._sessions: dict[str, Any] = {}

    def session_id(self, ctx: Context[Any, Any]) -> str:
        """The id of the client connection behind `ctx` (one per process over stdio), remembered."""
        headers = ctx.headers or {}
        connection = headers.get("mcp-session-id") or self._stdio_id
        self._sessions[connection] = ctx.request_context.session
        return connection

    async def deliver(self, record: TaskRecord) -> None:
        await self._announce(record, final=True)

    async def progress(self, record: TaskRecord) -> None:
        await self._announce(record, final=False)

    async def _announce(self, record: TaskRecord, *, final: bool) -> None:
        uri = task_uri(record.task_id)
        await self.bus.publish(ResourceUpdated(uri=uri))
        connection = record.origin.session if isinstance(record.origin, McpOrigin) else ""
        session = self._sessions.get(connection)
        if session is None:
            return  # that client is gone; the result stays readable as a resource and in list_videos
        try:
            await session.send_resource_updated(uri)
            if final:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # logging is deprecated in 2026-07-28 but clients still show it
                    await session.send_log_message(
                        level="info" if record.outcome is Outcome.SUCCEEDED else "warning",
                        data={"message": finished_sentence(record), "task_id": record.task_id, "uri": uri},
                        logger="kling3",
                    )
        except Exception as exc:  # a closed session is not a reason to retry for a day
            log.info("could not notify the MCP session of %s: %s", record.task_id, exc)
            self._sessions.pop(connection, None)
