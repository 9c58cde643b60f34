"""The status notifications of MCP task handles: to the 2025-11-25 session that started a task, and on 2026-07-28
`subscriptions/listen` streams that name it (`taskIds`); on the answers of `task_answers`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from mcp.server.context import ServerRequestContext
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import SubscriptionsAcknowledgedNotification

from ..domain.mcp_tasks import McpTaskHandle
from .server import Deps, KlingMCPServer, one_line
from .task_answers import RawNotification, TaskAnswers, log, target_uri
from .tasks import CORE_TASKS_VERSION

Streamed = TypeVar("Streamed")
RETRY_SECONDS, MAX_RETRY_SECONDS = 1.0, 30.0  # a status that could not be read is read again after this
MAX_FOLLOWED = 10_000  # the URIs of 2025-11-25 handles followed for their sessions


class TaskViews(TaskAnswers):
    """The core's answers to the task methods (`tasks.TaskViews`), and their status notifications."""

    def __init__(self, server: KlingMCPServer, deps: Deps) -> None:
        super().__init__(server, deps)
        # 2025-11-25: by the URI of what they follow, the handles started in a session of this process, and its id
        self._for_sessions: dict[str, dict[str, tuple[McpTaskHandle, str]]] = {}
        self._retrying: set[str] = set()  # URIs whose sessions are told again a little later
        self._retries: set[asyncio.Task[None]] = set()

    def follow_for_session(self, handle: McpTaskHandle, connection: str) -> None:
        if uri := target_uri(handle):
            self._for_sessions.setdefault(uri, {})[handle.mcp_task_id] = (handle, connection)
        while len(self._for_sessions) > MAX_FOLLOWED:  # sessions end without a word: forget the oldest
            del self._for_sessions[next(iter(self._for_sessions))]

    async def changed(self, uri: str) -> None:
        """What `uri` names changed (heard on this replica): tell the 2025-11-25 sessions that started a task on
        it, and wake whoever watches it (`tasks/result`, listen streams)."""
        for queue in self._watchers.get(uri, ()):
            queue.put_nowait(uri)
        following = self._for_sessions.get(uri, {})
        for handle_id, (handle, connection) in list(following.items()):
            try:
                snap = await self.snapshot(await self._fresh(handle))
            except Exception as exc:  # told a little later (this change may be the last); the others now
                log.warning("task %s: no status notification yet (%s)", handle_id, one_line(exc))
                self._again(uri)
                continue
            if snap.ended:
                following.pop(handle_id, None)
            status = RawNotification(method="notifications/tasks/status", params=self.wire(snap, CORE_TASKS_VERSION))
            await self.deps.notifier.send(connection, uri, status)
        if not following:
            self._for_sessions.pop(uri, None)

    def _again(self, uri: str) -> None:
        if uri in self._retrying:
            return
        self._retrying.add(uri)

        async def again() -> None:
            await asyncio.sleep(RETRY_SECONDS)
            self._retrying.discard(uri)
            await self.changed(uri)

        retry = asyncio.get_running_loop().create_task(again())
        self._retries.add(retry)
        retry.add_done_callback(self._retries.discard)

    async def listen(
        self,
        ctx: ServerRequestContext[Any, Any],
        task_ids: list[str],
        stream: Callable[[ServerRequestContext[Any, Any]], Awaitable[Streamed]],
    ) -> Streamed:
        """2026-07-28: a listen stream that names tasks (`taskIds`, each the caller's) carries their
        `notifications/tasks`, after the SDK's acknowledgement (which says it honours them)."""
        handles = {handle.mcp_task_id: handle for handle in [await self.own(ctx, task_id) for task_id in task_ids]}
        acknowledged = asyncio.Event()
        session = Acknowledging(ctx.session, acknowledged, list(handles))
        targets = {uri: handle for handle in handles.values() if (uri := target_uri(handle))}
        async with self.watching(list(targets)) as changes:
            pump = asyncio.create_task(self._pump(ctx, targets, changes, acknowledged))
            try:
                return await stream(replace(ctx, session=session))  # type: ignore[arg-type]  # a proxy of it
            finally:
                pump.cancel()

    async def _pump(
        self,
        ctx: ServerRequestContext[Any, Any],
        targets: dict[str, McpTaskHandle],
        changes: asyncio.Queue[str],
        acknowledged: asyncio.Event,
    ) -> None:
        """Each task's status once the stream is acknowledged (it may have ended already), then at each change;
        one that cannot be read now is read again a little later (a change may be the last)."""
        await acknowledged.wait()
        for uri in targets:
            changes.put_nowait(uri)
        delay = RETRY_SECONDS
        while True:
            uri = await changes.get()
            handle = targets[uri]
            try:
                task = self.wire(await self.snapshot(await self._fresh(handle)), ctx.protocol_version, detailed=True)
            except Exception as exc:
                log.warning("task %s: no status notification yet (%s)", handle.mcp_task_id, one_line(exc))
                await asyncio.sleep(delay)
                delay = min(2 * delay, MAX_RETRY_SECONDS)
                changes.put_nowait(uri)
                continue
            delay = RETRY_SECONDS
            task["_meta"] = {SUBSCRIPTION_ID_META_KEY: ctx.request_id}
            notification = RawNotification(method="notifications/tasks", params=task)
            await ctx.session.send_notification(notification, related_request_id=ctx.request_id)  # type: ignore[arg-type]


class Acknowledging:
    """A request's session whose listen acknowledgement also names the tasks the stream carries (the SDK's
    stream knows only its own notifications), and says when it was sent."""

    def __init__(self, session: Any, sent: asyncio.Event, task_ids: list[str]) -> None:
        self._session, self._sent, self._task_ids = session, sent, task_ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    async def send_notification(self, notification: Any, related_request_id: Any = None) -> None:
        if isinstance(notification, SubscriptionsAcknowledgedNotification) and not self._sent.is_set():
            honored = notification.params.notifications.model_dump(by_alias=True, exclude_none=True)
            params = {"notifications": honored | {"taskIds": self._task_ids}, "_meta": notification.params.meta}
            notification = RawNotification(method=notification.method, params=params)
        await self._session.send_notification(notification, related_request_id=related_request_id)
        self._sent.set()
