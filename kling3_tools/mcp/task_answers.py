"""What an MCP task handle says, read from the store (the handle, and the video task or story it follows) in the
era its client speaks, and the handles the spending tools mint (`started`). `tasks.py` says which protocol method
reaches what here; `task_views` adds the status notifications."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, Notification
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..domain.mcp_tasks import McpTaskHandle
from ..domain.records import Outcome, mcp_owner
from ..domain.story_record import StoryState
from .outputs import finished_sentence, story_sentence, story_uri, task_uri, to_story, to_video
from .server import Deps, KlingMCPServer, deps_of, one_line
from .tasks import CORE_TASKS_VERSION, TASK_CALL

log = logging.getLogger("kling3_tools.mcp")
RELATED_TASK = "io.modelcontextprotocol/related-task"
PAGE = 50
MIN_POLL_SECONDS, MAX_POLL_SECONDS = 1.0, 30.0
RESULT_WAIT_SECONDS = 15.0  # how long `tasks/result` waits for a change before it reads the store again anyway
MAX_CURSOR = 200


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
    return MCPError(code=INVALID_PARAMS, message=f"Unknown task: {clipped(task_id)}")


def clipped(text: str, limit: int = 100) -> str:
    """`text` (from a client or a provider) as one line of at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_text(result: dict[str, Any]) -> str:
    texts = [block.get("text", "") for block in result.get("content") or () if isinstance(block, dict)]
    return " ".join(texts) or "The tool answered with an error."


def started_sentence(handle: McpTaskHandle) -> str:
    return f"video task {handle.task_id}" if handle.task_id else f"story {handle.story_id}"


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
    handle = McpTaskHandle(owner=mcp_owner(deps.identity(ctx)), tool=call.tool, task_id=task_id, story_id=story_id)
    try:
        await deps.service.store.add_mcp_task(handle)
    except Exception as exc:  # whatever failed, what was started (and spent) is said, with what follows it
        what = f"video task {task_id}" if task_id else f"story {story_id}"
        raise ToolError(
            f"The {what} started (its credits are spent) and is followed, but no task handle could be kept "
            f"({one_line(exc)}): follow it with wait_for_video or list_videos; do not start it again."
        ) from None
    call.handle = handle
    if call.era == CORE_TASKS_VERSION:
        deps.task_views.follow_for_session(handle, deps.notifier.connection(ctx))
    return True


class TaskAnswers:
    """What the task methods answer, each in the era of the request (`task_views.TaskViews` adds the status
    notifications)."""

    def __init__(self, server: KlingMCPServer, deps: Deps) -> None:
        self.server, self.deps = server, deps
        keep_days = deps.settings.store.keep_days
        self.ttl_ms = int(keep_days * 86_400_000) if keep_days else None  # kept as long as the store keeps its task
        self._watchers: dict[str, set[asyncio.Queue[str]]] = {}  # by the URI of what the handles follow

    # --- reading ------------------------------------------------------------------------------

    def _context(self, ctx: ServerRequestContext[Any, Any]) -> Context[Any, Any]:
        return Context(request_context=ctx, mcp_server=self.server)

    def owner(self, ctx: ServerRequestContext[Any, Any]) -> str:
        return mcp_owner(self.deps.identity(self._context(ctx)))

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
            what = started_sentence(handle)
            message = f"Cancelled here. The {what} goes on (its credits are spent) and stays listed."
            return Snapshot(handle, "cancelled", handle.cancelled_at, message)
        if handle.task_id is not None:
            record = await service.get(handle.task_id)
            if record is None:
                return Snapshot(handle, "completed", handle.created_at, result=tool_result({}, error="No longer kept."))
            if record.is_tracking:
                poll = (record.due_at or time.time()) - time.time()
                message = f"{clipped(record.raw_status or 'running')}: {started_sentence(handle)}"
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
            return Snapshot(handle, "working", handle.created_at, started_sentence(handle), poll_seconds=poll)
        status = to_story(story).model_dump(mode="json", by_alias=True)
        error = None if story.state is StoryState.SUCCEEDED else story_sentence(story)
        return Snapshot(handle, "completed", story.finished_at or time.time(), result=tool_result(status, error=error))

    def wire(self, snap: Snapshot, era: str, *, detailed: bool = False) -> dict[str, Any]:
        """The task as `era` spells it (2026-07-28: `ttlMs`, `pollIntervalMs`, and with `detailed` the result).
        A tool's error answer (a failed video, a refusal) is `completed` with that answer in 2026-07-28 (SEP-2663)
        and `failed`, saying why, in 2025-11-25 (whose `tasks/result` still gives the answer)."""
        modern = era in MODERN_PROTOCOL_VERSIONS
        status, message = snap.status, snap.message
        if not modern and snap.result is not None and snap.result.get("isError"):
            status, message = "failed", clipped(error_text(snap.result), 500)
        task: dict[str, Any] = {
            "taskId": snap.handle.mcp_task_id,
            "status": status,
            "createdAt": iso(snap.handle.created_at),
            "lastUpdatedAt": iso(snap.updated_at),
            "ttlMs" if modern else "ttl": self.ttl_ms,
        }
        if message:
            task["statusMessage"] = message
        if snap.poll_seconds is not None:
            poll = round(1000 * min(max(snap.poll_seconds, MIN_POLL_SECONDS), MAX_POLL_SECONDS))
            task["pollIntervalMs" if modern else "pollInterval"] = poll
        if modern and detailed and snap.result is not None:
            task["result"] = {"resultType": "complete", **snap.result}
        return task

    # --- the methods --------------------------------------------------------------------------

    async def created(self, handle: McpTaskHandle, era: str) -> dict[str, Any]:
        """A handle just minted: as the store has it, or (the store unreadable) as it must be, working."""
        try:
            snap = await self.snapshot(handle)
        except Exception as exc:
            log.warning("task %s: its video could not be read (%s)", handle.mcp_task_id, one_line(exc))
            snap = Snapshot(handle, "working", handle.created_at, started_sentence(handle), poll_seconds=1.0)
        return self.wire(snap, era)

    async def answered(self, ctx: ServerRequestContext[Any, Any], tool: str, result: Any) -> dict[str, Any]:
        """2025-11-25: a task-augmented call that started nothing (refused, declined) gets a task that already
        ended with its answer (`failed`, in that era's words, when the answer is an error), since that era's
        client expects a task."""
        answer = result if isinstance(result, dict) else {"content": [], "isError": True}
        handle = McpTaskHandle(owner=self.owner(ctx), tool=tool, result=answer)
        try:
            await self.deps.service.store.add_mcp_task(handle)
        except Exception as exc:  # no task, then: the tool's own answer, as an error
            log.warning("a task for a %s answer could not be kept: %s", tool, one_line(exc))
            raise MCPError(code=INTERNAL_ERROR, message=clipped(error_text(answer), 2000)) from None
        return self.wire(await self.snapshot(handle), ctx.protocol_version)

    async def get(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        return self.wire(await self.snapshot(await self.own(ctx, task_id)), ctx.protocol_version, detailed=True)

    async def result(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        """2025-11-25 `tasks/result`: the tool's answer, once the task ended (waiting for it until then)."""
        handle = await self.own(ctx, task_id)
        uri = target_uri(handle)
        async with self.watching([uri] if uri else []) as changes:  # woken by the pollers' changes, on any replica
            snap = await self.snapshot(handle)
            while not snap.ended:  # the store alone: waiters never ask the API (the pollers do, within its limits)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changes.get(), RESULT_WAIT_SECONDS)
                handle = await self.own(ctx, task_id)
                snap = await self.snapshot(handle)
        if snap.result is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Task {clipped(task_id)} was {snap.status}: {snap.message}")
        return {**snap.result, "_meta": {RELATED_TASK: {"taskId": handle.mcp_task_id}}}

    async def listing(self, ctx: ServerRequestContext[Any, Any], cursor: str | None) -> dict[str, Any]:
        """2025-11-25 `tasks/list`: the caller's tasks, newest first, a page at a time."""
        try:
            if cursor is not None and len(cursor) > MAX_CURSOR:
                raise ValueError(cursor)
            before = None if cursor is None else tuple(json.loads(base64.urlsafe_b64decode(cursor.encode())))
            at, last = before if before is not None else (None, None)
            after = None if before is None else (float(at), str(last))
        except (ValueError, TypeError, RecursionError):
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
            raise MCPError(code=INVALID_PARAMS, message=f"Cannot cancel task {clipped(task_id)}: it ended.")
        if not snap.ended:
            cancelled_at = time.time()
            await self.deps.service.store.cancel_mcp_task(handle.mcp_task_id, cancelled_at)
            handle = handle.model_copy(update={"cancelled_at": cancelled_at})
            if uri := target_uri(handle):
                await self.deps.notifier.announce(uri)  # its status notifications say so, on every replica
        return {} if modern else self.wire(await self.snapshot(handle), ctx.protocol_version)

    async def update(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]:
        """2026-07-28 `tasks/update`: these tasks never wait for input (approval comes before they exist)."""
        await self.own(ctx, task_id)
        return {}

    async def _fresh(self, handle: McpTaskHandle) -> McpTaskHandle:
        """The handle as the store has it now (cancelled since, perhaps)."""
        return await self.deps.service.store.get_mcp_task(handle.mcp_task_id, owner=handle.owner) or handle

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
