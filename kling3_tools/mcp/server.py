"""The SDK's `MCPServer` with what every tool needs: the service, the notifier and `[mcp]`'s limits, opened
only when a request needs them.

A client starts this server at the beginning of every session and lists its tools at once; it calls one,
if ever, after the model has thought. So the server answers the handshake and `tools/list` (from the
checked-in manifest, `manifest.py`) before the core is imported or the store opened: those load at the first
request that needs them, or `WARM_UP_SECONDS` after start, whichever comes first. Tools reach the core
through `deps_of(ctx)`; argument errors read like the core's own.

This module imports only the SDK and light modules of ours; what it names from the core is for type checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    CompleteRequestParams,
    SetLevelRequestParams,
    SubscribeRequestParams,
    Tool,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, ValidationError

from ..domain.errors import KlingError, NoAPIKeyError, RequestValidationError
from ..launch import UsageError
from . import manifest
from .arguments import as_declared
from .http import client_identity, signed_in_subject
from .tasks import TASK_METHODS, Tasks, TaskViews

if TYPE_CHECKING:
    from ..config import Settings
    from ..domain.ledger import SpendLimit
    from ..domain.records import TaskRecord
    from ..domain.story_record import StoryRecord
    from ..service import KlingService
    from .notifier import McpNotifier

Params = TypeVar("Params", bound=BaseModel)

log = logging.getLogger("kling3_tools.mcp")

WARM_UP_SECONDS = 1.0
# Protocol methods the core serves, with their parameters: registered before it loads, because the handshake
# advertises what the server serves, and again with their handlers when it loads.
PROTOCOL_METHODS: dict[str, type[BaseModel]] = {
    "resources/subscribe": SubscribeRequestParams,
    "resources/unsubscribe": UnsubscribeRequestParams,
    "logging/setLevel": SetLevelRequestParams,
    "completion/complete": CompleteRequestParams,
}
# What the core serves. The handshake of either era, ping and tools/list are answered without it; any other
# method goes straight to the SDK, which answers it as it would (an unknown one is "Method not found").
NEEDS_CORE = frozenset({
    "tools/call", "resources/list", "resources/read", "resources/templates/list", "resources/subscribe",
    "resources/unsubscribe", "prompts/list", "prompts/get", "completion/complete", "logging/setLevel",
    "subscriptions/listen", *TASK_METHODS,
})  # fmt: skip


PERSON_LIMITS_SECONDS = 5.0  # how long a person's limits from the store are kept before they are read again
PERSON_LIMITS_KEPT = 10_000


@dataclass
class Deps:
    service: KlingService
    notifier: McpNotifier
    settings: Settings
    task_views: TaskViews = field(init=False)  # the core's, which needs these
    _stored_limits: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)

    @functools.cached_property
    def limit(self) -> SpendLimit:
        """`[mcp]`'s limits, over every MCP task of the store."""
        from ..domain.ledger import Scope, SpendLimit

        limits = self.settings.mcp
        return SpendLimit(
            "mcp",
            Scope(origin_kind="mcp"),
            daily_credits=limits.daily_credit_budget,
            max_credits_per_video=limits.max_credits_per_video,
            daily_key="daily_credit_budget",
        )

    async def limits(self, ctx: Context[Any, Any]) -> list[SpendLimit]:
        """`[mcp]`'s limits over every MCP task, and over HTTP the caller's own, counted by the ledger under the
        caller's number as a Discord member's are: an operator's for them (`kling3 person`, kept in the store),
        else theirs in `[mcp] people`, else `[mcp]`'s `*_per_user`."""
        from ..domain.ledger import Scope, SpendLimit
        from ..domain.records import person_number

        who = client_identity(ctx)  # whoever pays, whatever `share_tasks` lets them see
        if who is None:
            return [self.limit]
        subject = signed_in_subject()
        operators = await self._operators_limits(subject) if subject else {}
        daily, running, cooldown = self.settings.mcp.person_limits(subject, operators)
        mine = SpendLimit(
            "mcp",
            Scope(origin_kind="mcp", user_id=person_number(who)),
            daily_credits=daily,
            max_running=running,
            cooldown_seconds=cooldown,
            daily_key="daily_credit_budget_per_user",
        )
        return [self.limit, mine]

    async def _operators_limits(self, subject: str) -> dict[str, Any]:
        now = time.monotonic()
        kept = self._stored_limits.get(subject)
        if kept is None or now - kept[0] > PERSON_LIMITS_SECONDS:
            found = await self.service.store.person_limits(subject)
            kept = (now, found.get(subject, {}))
            self._stored_limits.pop(subject, None)
            self._stored_limits[subject] = kept
            while len(self._stored_limits) > PERSON_LIMITS_KEPT:
                del self._stored_limits[next(iter(self._stored_limits))]
        return kept[1]

    def needs_confirmation(self, credits: int) -> bool:
        confirm_above = self.settings.mcp.confirm_above_credits
        return bool(confirm_above) and credits > confirm_above

    def identity(self, ctx: Context[Any, Any]) -> str | None:
        """Whose tasks this caller may see; None when every client sees every MCP task."""
        return None if self.settings.mcp.share_tasks else client_identity(ctx)

    async def own_record(self, task_id: str, ctx: Context[Any, Any]) -> TaskRecord | None:
        """The recorded task when this client may see it. Over HTTP, another client's task and an id the
        store does not know (which the API would describe to anyone holding the key) raise `NotYours`."""
        record = await self.service.get(task_id)
        who = self.identity(ctx)
        if who is not None and (record is None or getattr(record.origin, "owner", None) != who):
            raise NotYours(f"Task {task_id} is not one of this client's videos.")
        return record

    async def own_story(self, story_id: str, ctx: Context[Any, Any]) -> StoryRecord:
        """The story when this client may see it (over HTTP, only its own); else `NotYours`."""
        record = await self.service.stories.get(story_id)
        who = self.identity(ctx)
        if record is None or (who is not None and record.owner != who):
            raise NotYours(f"Story {story_id} is not one of this client's stories.")
        return record


class NotYours(Exception):
    """A task this client may not see; the message says so."""


OpenCore = Callable[["KlingMCPServer"], AbstractAsyncContextManager[Deps]]


class KlingMCPServer(MCPServer):
    """`MCPServer` that opens its core (`open_core`: the service, the notifier, the registered tools) when a
    request needs it and holds it until `core_held()` ends; whose argument errors say which field, which rule,
    and that nothing was spent (the SDK's default is pydantic's dump, with links)."""

    def __init__(self, open_core: OpenCore, *, warm_up_seconds: float | None = WARM_UP_SECONDS, **kwargs: Any) -> None:
        self.bus = InMemorySubscriptionBus()
        self.tasks = Tasks(self._task_views)
        super().__init__(subscriptions=self.bus, extensions=[*kwargs.pop("extensions", ()), self.tasks], **kwargs)
        self.deps: Deps | None = None
        self.open_core = open_core
        self.warm_up_seconds = warm_up_seconds
        self._opened: asyncio.Future[Deps] | None = None
        self._holder: asyncio.Task[None] | None = None
        self._warming: asyncio.Task[None] | None = None
        self._release = asyncio.Event()
        self._input_schemas: dict[str, dict[str, Any]] = {}  # each tool's, read once it is registered
        self.middleware.extend([self._core_first, self.tasks.middleware])

    async def core(self) -> Deps:
        """The opened core, opening it on first need; a failure to open is one line and the next request
        tries again."""
        try:
            return await asyncio.shield(self._open())
        except Exception as exc:
            raise MCPError(code=INTERNAL_ERROR, message=f"kling3 could not start: {one_line(exc)}") from None

    async def _task_views(self) -> TaskViews:
        return (await self.core()).task_views

    def _open(self) -> asyncio.Future[Deps]:
        opened = self._opened
        if opened is None or opened.cancelled() or (opened.done() and opened.exception() is not None):
            self._opened = opened = asyncio.get_running_loop().create_future()
            # A context of its own: the core outlives the request that opened it (and that request's trace).
            self._holder = asyncio.create_task(
                self._hold(opened), name="kling3-mcp-core", context=contextvars.Context()
            )
        return opened

    async def _hold(self, opened: asyncio.Future[Deps]) -> None:
        """Open the core in this one task (its context is entered and left in the same task), hand it over,
        and hold it until `core_held()` ends."""
        try:
            async with self.open_core(self) as deps:
                self.deps = deps
                opened.set_result(deps)
                await self._release.wait()
        except Exception as exc:
            if opened.done():
                log.warning("the core did not close cleanly: %s", one_line(exc))
                return
            log.debug("the core did not open", exc_info=True)
            opened.set_exception(exc)
            opened.exception()  # each request that needs the core says it, and the warm-up logs it
        except BaseException:
            opened.cancel()
            raise

    @contextlib.asynccontextmanager
    async def core_held(self) -> AsyncIterator[None]:
        """While serving: warm the core up `warm_up_seconds` after start; at the end, close it if it opened
        (leases released, the store and the pool closed), or stop opening it."""
        loop = asyncio.get_running_loop()
        warm_up = None if self.warm_up_seconds is None else loop.call_later(self.warm_up_seconds, self._warm_up)
        try:
            yield
        finally:
            if warm_up is not None:
                warm_up.cancel()
            self._release.set()
            if self._holder is not None:
                if self._opened is not None and not self._opened.done():
                    self._holder.cancel()  # a store that hangs must not hold the exit: what it entered unwinds
                await asyncio.gather(self._holder, return_exceptions=True)

    def _warm_up(self) -> None:
        if self._opened is None:
            self._warming = asyncio.create_task(self._warm())

    async def _warm(self) -> None:
        with contextlib.suppress(MCPError, asyncio.CancelledError):  # said; the next request tries again
            await self._core_said()

    async def _core_said(self) -> Deps:
        """`core()`, with a failure also in the log (the client sees it in its answer)."""
        try:
            return await self.core()
        except MCPError as exc:
            log.warning("%s", exc.message)
            raise

    async def _core_first(self, ctx: ServerRequestContext[Any, Any], call_next: Callable[..., Awaitable[Any]]) -> Any:
        if self.deps is None and ctx.method in NEEDS_CORE:  # once open, the core stays open to the end
            await self._core_said()
        return await call_next(ctx)

    async def list_tools(self) -> list[Tool]:
        return await super().list_tools() if self.deps is not None else manifest.tools()

    def add_request_handler(
        self, method: str, params_type: type[Params], handler: Callable[[Context[Any, Any], Params], Awaitable[Any]]
    ) -> None:
        """Serve a protocol method the high-level server has no decorator for (or one whose handler would not
        see the caller), with the same `Context` the tools get. The SDK's own `completion()` registers this way;
        a served method is advertised in the capabilities."""

        async def handle(request_context: ServerRequestContext[Any, Any], params: Params) -> Any:
            return await handler(Context(request_context=request_context, mcp_server=self), params)

        self._lowlevel_server.add_request_handler(method, params_type, handle)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None) -> Any:
        if name not in self._input_schemas:
            self._input_schemas = {tool.name: tool.input_schema for tool in await self.list_tools()}
        arguments = as_declared(self._input_schemas.get(name, {}), arguments)
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:  # a crash: the SDK logs it with its traceback and shows no detail
            raise
        except ToolError as exc:
            if not isinstance(exc.__cause__, ValidationError):  # our own words, without the SDK's prefix
                raise ToolError(str(exc).removeprefix(f"Error executing tool {name}: ")) from exc
            from ..domain.rules import describe_validation_error  # the tool's module has loaded it

            message = str(RequestValidationError(describe_validation_error(exc.__cause__)))
            spent = "\nNothing was spent." if name == "generate_video" else ""
            raise ToolError(message + spent) from None


NO_API_KEY = (
    "No API key: set KLING_API_KEY (Kling's own API: KLING_ACCESS_KEY and KLING_SECRET_KEY) in this server's "
    "environment (the `env` of its entry in your MCP client's config), or start it with --sandbox to try "
    "everything with no key and no cost. Nothing was spent."
)


def said(exc: KlingError) -> str:
    """An error as a tool says it: in this front end's terms where the core's words are Python's."""
    return NO_API_KEY if isinstance(exc, NoAPIKeyError) else exc.message


def one_line(exc: Exception) -> str:
    if isinstance(exc, KlingError):
        text = said(exc)
    else:
        text = str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def deps_of(ctx: Context[Any, Any]) -> Deps:
    server = ctx.mcp_server
    assert isinstance(server, KlingMCPServer)
    assert server.deps is not None
    return server.deps
