"""What an MCP task handle says, read from the store (the handle, and the video task or story it follows) in the
era its client speaks; the handles minted by the spending tools (`started`); and status notifications, to the
2025-11-25 session that started a task and on 2026-07-28 listen streams that name it. `tasks.py` says which
protocol method reaches what here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import INVALID_PARAMS, Notification, SubscriptionsAcknowledgedNotification
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..domain.errors import KlingError
from ..domain.mcp_tasks import NO_OWNER, McpTaskHandle
from ..domain.records import Outcome
from ..domain.story_record import StoryState
from .outputs import finished_sentence, story_sentence, story_uri, task_uri, to_story, to_video
from .server import Deps, KlingMCPServer, deps_of, said
from .tasks import CORE_TASKS_VERSION, TASK_CALL

Streamed = TypeVar("Streamed")
RELATED_TASK = "io.modelcontextprotocol/related-task"
PAGE = 50
MIN_POLL_SECONDS, MAX_POLL_SECONDS = 1.0, 30.0
RESULT_WAIT_SECONDS = 3.0  # how long `tasks/result` waits for a change before it looks again
MAX_FOLLOWED = 10_000  # 2025-11-25 handles followed for their sessions


class RawNotification(Notification[dict[str, Any], str]):
    """A notification whose params are sent as given (a task's `ttl: null` included)."""


@dataclass
class Snapshot:
    handle: McpTaskHandle
    status: str
    updated_at: float
    message: str | None = None
    result: dict[str, Any] | None = None  # the tool's answer, once completed
    poll_seconds: float | None = None

    @property
    def ended(self) -> bool:
        return self.status != "working"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def unknown(task_id: str) -> MCPError:
    return MCPError(code=INVALID_PARAMS, message=f"Unknown task: {task_id[:100]}")


def tool_result(structured: dict[str, Any], *, error: str | None = None) -> dict[str, Any]:
    """A tool's answer as the tool would have given it: its structured content and that as text (or, for a
    failure, the sentence that says why)."""
    text = error if error is not None else json.dumps(structured, indent=2)
    return {"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": error is not None}


def target_uri(handle: McpTaskHandle) -> str | None:
    if handle.task_id is not None:
        return task_uri(handle.task_id)
    return story_uri(handle.story_id) if handle.story_id is not None else None


async def started(ctx: Context[Any, Any], *, task_id: str | None = None, story_id: str | None = None) -> bool:
    """A spending tool's video task (or story) is recorded: when its client asked for a task, mint the handle on
    it (True: the tool answers at once). A handle that cannot be kept is said with the id that can be followed."""
    call = TASK_CALL.get()
    if call is None:
        return False
    deps = deps_of(ctx)
    handle = McpTaskHandle(owner=deps.identity(ctx) or NO_OWNER, tool=call.tool, task_id=task_id, story_id=story_id)
    try:
        await deps.service.store.add_mcp_task(handle)
    except KlingError as exc:
        what = f"video task {task_id}" if task_id else f"story {story_id}"
        raise ToolError(f"The {what} started and is followed, but no task handle could be kept: {said(exc)}") from None
    call.handle = handle
    if call.era == CORE_TASKS_VERSION:
        deps.task_views.follow_for_session(handle, deps.notifier.connection(ctx))
    return True


class TaskViews:
    """The core's answers to the task methods (`tasks.TaskViews`), and the status notifications."""

    def __init__(self, server: KlingMCPServer, deps: Deps) -> None:
        self.server, self.deps = server, deps
        keep_days = deps.settings.store.keep_days
        self.ttl_ms = int(keep_days * 86_400_000) if keep_days else None  # kept as long as the store keeps its task
        # 2025-11-25: by the URI of what they follow, the handles started in a session of this process, and its id
        self._for_sessions: dict[str, dict[str, tuple[McpTaskHandle, str]]] = {}
        self._watchers: dict[str, set[asyncio.Queue[str]]] = {}  # by the URI of what the handles follow

    # --- reading ------------------------------------------------------------------------------

    def _context(self, ctx: ServerRequestContext[Any, Any]) -> Context[Any, Any]:
        return Context(request_context=ctx, mcp_server=self.server)

    def owner(self, ctx: ServerRequestContext[Any, Any]) -> str:
        return self.deps.identity(self._context(ctx)) or NO_OWNER

    async def own(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> McpTaskHandle:
        """The caller's handle; another owner's is unknown, as an id never given is."""
        handle = await self.deps.service.store.get_mcp_task(task_id, owner=self.owner(ctx))
        if handle is None:
            raise unknown(task_id)
        return handle

    async def snapshot(self, handle: McpTaskHandle) -> Snapshot:
        service = self.deps.service
        if handle.result is not None:
            return Snapshot(handle, "completed", handle.created_at, result=handle.result)
        if handle.cancelled_at is not None:
            what = f"video task {handle.task_id}" if handle.task_id else f"story {handle.story_id}"
            message = f"Cancelled here. The {what} goes on (its credits are spent) and stays listed."
            return Snapshot(handle, "cancelled", handle.cancelled_at, message)
        if handle.task_id is not None:
            record = await service.get(handle.task_id)
            if record is None:
                return Snapshot(handle, "completed", handle.created_at, result=tool_result({}, error="No longer kept."))
            if record.is_tracking:
                poll = (record.due_at or time.time()) - time.time()
                message = f"{record.raw_status or 'running'}: video task {record.task_id}"
                return Snapshot(handle, "working", handle.created_at, message, poll_seconds=poll)
            video = (await to_video(service, record)).model_dump(mode="json", by_alias=True)
            error = None if record.outcome is Outcome.SUCCEEDED else finished_sentence(record)
            return Snapshot(
                handle, "completed", record.finished_at or time.time(), result=tool_result(video, error=error)
            )
        story = await service.stories.get(handle.story_id or "")
        if story is None:
            return Snapshot(handle, "completed", handle.created_at, result=tool_result({}, error="No longer kept."))
        if story.state is StoryState.RUNNING:
            poll = (story.due_at or time.time()) - time.time()
            return Snapshot(handle, "working", handle.created_at, f"story {story.story_id}", poll_seconds=poll)
        status = to_story(story).model_dump(mode="json", by_alias=True)
        error = None if story.state is StoryState.SUCCEEDED else story_sentence(story)
        return Snapshot(handle, "completed", story.finished_at or time.time(), result=tool_result(status, error=error))

    def wire(self, snap: Snapshot, era: str, *, detailed: bool = False) -> dict[str, Any]:
        """The task as `era` spells it (2026-07-28: `ttlMs`, `pollIntervalMs`, and with `detailed` the result)."""
        modern = era in MODERN_PROTOCOL_VERSIONS
        task: dict[str, Any] = {
            "taskId": snap.handle.mcp_task_id,
            "status": snap.status,
            "createdAt": iso(snap.handle.created_at),
            "lastUpdatedAt": iso(snap.updated_at),
            "ttlMs" if modern else "ttl": self.ttl_ms,
        }
        if snap.message:
            task["statusMessage"] = snap.message
        if snap.poll_seconds is not None:
            poll = round(1000 * min(max(snap.poll_seconds, MIN_POLL_SECONDS), MAX_POLL_SECONDS))
            task["pollIntervalMs" if modern else "pollInterval"] = poll
        if modern and detailed and snap.result is not None:
            task["result"] = {"resultType": "complete", **snap.result}
        return task

    # --- the methods --------------------------------------------------------------------------

    async def created(self, handle: McpTaskHandle, era: str) -> dict[str, Any]:
        return self.wire(await self.snapshot(handle), era)

    async def answered(self, ctx: ServerRequestContext[Any, Any], tool: str, result: Any) -> dict[str, Any]:
        """2025-11-25: a task-augmented call that started nothing (refused, declined) gets a completed task
        holding its answer, since that era's client expects a task."""
        answer = result if isinstance(result, dict) else {"content": [], "isError": True}
        handle = McpTaskHandle(owner=self.owner(ctx), tool=tool, result=answer)
        await self.deps.service.store.add_mcp_task(handle)
        return self.wire(await self.snapshot(handle), ctx.protocol_version)

    async def get(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        return self.wire(await self.snapshot(await self.own(ctx, task_id)), ctx.protocol_version, detailed=True)

    async def result(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        """2025-11-25 `tasks/result`: the tool's answer, once the task ended (waiting for it until then)."""
        handle = await self.own(ctx, task_id)
        uri = target_uri(handle)
        async with self.watching([uri] if uri else []) as changes:
            snap = await self.snapshot(handle)
            asked = time.monotonic()
            while not snap.ended:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changes.get(), RESULT_WAIT_SECONDS)
                if handle.task_id is not None:  # asks the API when no poller will look soon
                    _, asked = await self.deps.service.follow(handle.task_id, asked_at=asked)
                handle = await self.own(ctx, task_id)
                snap = await self.snapshot(handle)
        if snap.result is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Task {task_id[:100]} was {snap.status}: {snap.message}")
        return {**snap.result, "_meta": {RELATED_TASK: {"taskId": handle.mcp_task_id}}}

    async def listing(self, ctx: ServerRequestContext[Any, Any], cursor: str | None) -> dict[str, Any]:
        """2025-11-25 `tasks/list`: the caller's tasks, newest first, a page at a time."""
        try:
            before = None if cursor is None else tuple(json.loads(base64.urlsafe_b64decode(cursor.encode())))
            at, last = before if before is not None else (None, None)
            after = None if before is None else (float(at), str(last))
        except (ValueError, TypeError):
            raise MCPError(code=INVALID_PARAMS, message="Invalid cursor") from None
        handles = await self.deps.service.store.mcp_tasks(self.owner(ctx), before=after, limit=PAGE + 1)
        page = handles[:PAGE]
        listed: dict[str, Any] = {"tasks": [self.wire(await self.snapshot(h), ctx.protocol_version) for h in page]}
        if len(handles) > PAGE:
            listed["nextCursor"] = base64.urlsafe_b64encode(
                json.dumps([page[-1].created_at, page[-1].mcp_task_id]).encode()
            ).decode()
        return listed

    async def cancel(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        """End the handle (the spec's cancel); what it follows goes on: a provider's generation cannot be
        stopped and its credits are spent. A task already ended: an error in 2025-11-25, an ack in 2026-07-28."""
        handle = await self.own(ctx, task_id)
        snap = await self.snapshot(handle)
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        if snap.ended and not modern:
            raise MCPError(code=INVALID_PARAMS, message=f"Cannot cancel task {task_id[:100]}: it is {snap.status}.")
        if not snap.ended:
            await self.deps.service.store.cancel_mcp_task(handle.mcp_task_id, time.time())
            if uri := target_uri(handle):
                await self.deps.notifier.announce(uri)  # its status notifications say so, on every replica
        return {} if modern else self.wire(await self.snapshot(await self.own(ctx, task_id)), ctx.protocol_version)

    async def update(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        """2026-07-28 `tasks/update`: these tasks never wait for input (approval comes before they exist)."""
        await self.own(ctx, task_id)
        return {}

    # --- notifications ------------------------------------------------------------------------

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
        for handle_id, (handle, connection) in list(self._for_sessions.get(uri, {}).items()):
            fresh = await self.deps.service.store.get_mcp_task(handle_id, owner=handle.owner) or handle
            snap = await self.snapshot(fresh)
            if snap.ended:
                self._for_sessions.get(uri, {}).pop(handle_id, None)
            status = RawNotification(method="notifications/tasks/status", params=self.wire(snap, CORE_TASKS_VERSION))
            await self.deps.notifier.send(connection, uri, status)

    @contextlib.asynccontextmanager
    async def watching(self, uris: list[str]) -> AsyncIterator[asyncio.Queue[str]]:
        changes: asyncio.Queue[str] = asyncio.Queue()
        for uri in uris:
            self._watchers.setdefault(uri, set()).add(changes)
        try:
            yield changes
        finally:
            for uri in uris:
                watchers = self._watchers.get(uri, set())
                watchers.discard(changes)
                if not watchers:
                    self._watchers.pop(uri, None)

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
            pump = asyncio.create_task(self._pump(ctx, handles, targets, changes, acknowledged))
            try:
                return await stream(replace(ctx, session=session))  # type: ignore[arg-type]  # a proxy of it
            finally:
                pump.cancel()

    async def _pump(
        self,
        ctx: ServerRequestContext[Any, Any],
        handles: dict[str, McpTaskHandle],
        targets: dict[str, McpTaskHandle],
        changes: asyncio.Queue[str],
        acknowledged: asyncio.Event,
    ) -> None:
        await acknowledged.wait()
        while True:
            handle = targets[await changes.get()]
            fresh = await self.deps.service.store.get_mcp_task(handle.mcp_task_id, owner=handle.owner) or handle
            task = self.wire(await self.snapshot(fresh), ctx.protocol_version, detailed=True)
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
