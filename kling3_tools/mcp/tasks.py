"""MCP Tasks: a tool call that answers at once with a handle on what it started, which the client then follows.
Both protocol eras, on the SDK's hooks:

- 2026-07-28, the extension `io.modelcontextprotocol/tasks` (SEP-2663): this `Extension` advertises it; a
  client that declares it (in each request's `_meta`) gets a task from a task-capable tool
  (`intercept_tool_call`), and has `tasks/get` (the result inlined), `tasks/update` and `tasks/cancel`;
  `notifications/tasks` go on `subscriptions/listen` streams that name the task (`protocol.Listen`).
- 2025-11-25, tasks in the core (experimental): `middleware` does what the SDK has no hook for (the `tasks`
  capability in `initialize`, `execution.taskSupport` on the task-capable tools, and a `tools/call` with
  `params.task` answered `{task: …}`); `tasks/get`, `tasks/result`, `tasks/list` and `tasks/cancel` are this
  extension's methods for that era; `notifications/tasks/status` go to the session that started the task.

A task-capable tool runs as it always does (checked, priced, approved, uploaded, reserved, submitted) and mints
the handle (`task_views.started`) only once what it started is durably recorded, then answers at once.
Everything else is read from the store by the core's `TaskViews`, so a restarted server answers for every
handle it gave. This module is light: it loads before the core, which serves the methods once it opens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Extension, MethodBinding, require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import HEADER_MISMATCH, METHOD_NOT_FOUND, CallToolRequestParams, PaginatedRequestParams, RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

EXTENSION = "io.modelcontextprotocol/tasks"
CORE_TASKS_VERSION = "2025-11-25"  # the handshake era whose core has tasks
TASK_TOOLS = frozenset({"generate_video", "extend_video", "lip_sync", "start_story"})  # each `optional`
CORE_CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
TASK_METHODS = frozenset({"tasks/get", "tasks/result", "tasks/list", "tasks/cancel", "tasks/update"})


@dataclass
class TaskCall:
    """A tool call its client asked to run as a task; the tool gives it the handle once what it started is
    recorded (`handle`, an `McpTaskHandle`)."""

    tool: str
    era: str
    handle: Any = None


Streamed = TypeVar("Streamed")
TASK_CALL: ContextVar[TaskCall | None] = ContextVar("kling3_mcp_task_call", default=None)


class TaskIdParams(RequestParams):
    task_id: str


class UpdateParams(TaskIdParams):
    input_responses: dict[str, Any] | None = None


class TaskViews(Protocol):
    """What the core answers (`task_views.TaskViews`): each a wire dict in the request's era."""

    async def created(self, handle: Any, era: str) -> dict[str, Any]: ...

    async def answered(self, ctx: ServerRequestContext[Any, Any], tool: str, result: Any) -> dict[str, Any]: ...

    async def get(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]: ...

    async def result(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]: ...

    async def listing(self, ctx: ServerRequestContext[Any, Any], cursor: str | None) -> dict[str, Any]: ...

    async def cancel(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]: ...

    async def update(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> dict[str, Any]: ...

    def follow_for_session(self, handle: Any, connection: str) -> None: ...

    async def listen(
        self,
        ctx: ServerRequestContext[Any, Any],
        task_ids: list[str],
        stream: Callable[[ServerRequestContext[Any, Any]], Awaitable[Streamed]],
    ) -> Streamed: ...


def is_modern(ctx: ServerRequestContext[Any, Any]) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


class Tasks(Extension):
    identifier = EXTENSION

    def __init__(self, views: Callable[[], Awaitable[TaskViews]]) -> None:
        self.views = views  # the core's, opened at first need

    def methods(self) -> list[MethodBinding]:
        core_era, modern = frozenset({CORE_TASKS_VERSION}), frozenset(MODERN_PROTOCOL_VERSIONS)
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get, core_era | modern),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, core_era | modern),
            MethodBinding("tasks/result", TaskIdParams, self._result, core_era),
            MethodBinding("tasks/list", PaginatedRequestParams, self._list, core_era),
            MethodBinding("tasks/update", UpdateParams, self._update, modern),
        ]

    def _checked(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> None:
        """2026-07-28: the client declared the extension in this request, and its routing header names the task."""
        if not is_modern(ctx):
            return
        require_client_extension(ctx, EXTENSION)
        named = ctx.request.headers.get("mcp-name") if ctx.request is not None else None
        if named is not None and named != params.task_id:
            raise MCPError(code=HEADER_MISMATCH, message="The Mcp-Name header does not name this request's task.")

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        self._checked(ctx, params)
        return await (await self.views()).get(ctx, params.task_id)

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        self._checked(ctx, params)
        return await (await self.views()).cancel(ctx, params.task_id)

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateParams) -> HandlerResult:
        self._checked(ctx, params)
        return await (await self.views()).update(ctx, params.task_id)

    async def _result(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        return await (await self.views()).result(ctx, params.task_id)

    async def _list(self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams) -> HandlerResult:
        return await (await self.views()).listing(ctx, params.cursor)

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """2026-07-28: a task-capable tool called by a client that declared the extension answers with a task
        once it started something; anything else (a refusal, an approval to ask for) answers as it would."""
        capabilities = ctx.session.client_capabilities
        declared = capabilities is not None and EXTENSION in (capabilities.extensions or {})
        if not (is_modern(ctx) and declared and params.name in TASK_TOOLS):
            return await call_next(ctx)
        call, result = await _run(params.name, ctx, call_next)
        if call.handle is None:
            return result
        return {"resultType": "task", **await (await self.views()).created(call.handle, ctx.protocol_version)}

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """2025-11-25: what tasks in the core need of the handshake, the tool list and a task-augmented call."""
        if ctx.method == "initialize":
            answer = await call_next(ctx)
            if isinstance(answer, dict) and answer.get("protocolVersion") == CORE_TASKS_VERSION:
                answer.setdefault("capabilities", {})["tasks"] = CORE_CAPABILITY
            return answer
        if ctx.protocol_version != CORE_TASKS_VERSION:
            return await call_next(ctx)
        if ctx.method == "tools/list":
            answer = await call_next(ctx)
            for tool in answer.get("tools", []) if isinstance(answer, dict) else []:
                if tool.get("name") in TASK_TOOLS:
                    tool["execution"] = {"taskSupport": "optional"}
            return answer
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        if ctx.method != "tools/call" or params.get("task") is None:
            return await call_next(ctx)
        name = str(params.get("name"))
        if name not in TASK_TOOLS:
            shown = " ".join(name.split())[:60]
            raise MCPError(code=METHOD_NOT_FOUND, message=f"{shown} does not run as a task; call it without `task`.")
        call, result = await _run(name, ctx, call_next)
        views = await self.views()
        task = await views.created(call.handle, ctx.protocol_version) if call.handle else None
        return {"task": task or await views.answered(ctx, name, result)}


async def _run(tool: str, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> tuple[TaskCall, HandlerResult]:
    call = TaskCall(tool, ctx.protocol_version)
    asked = TASK_CALL.set(call)
    try:
        return call, await call_next(ctx)
    finally:
        TASK_CALL.reset(asked)
