"""The SDK's `MCPServer` with what every tool needs: the service, the notifier and `[mcp]`'s limits.

Tools reach these through `deps_of(ctx)`; argument errors read like the core's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import BaseModel, ValidationError

from ..config import Settings
from ..errors import RequestValidationError
from ..ledger import Scope, SpendLimit
from ..models import describe_validation_error
from ..records import TaskRecord
from ..service import KlingService
from ..stories.record import StoryRecord
from .http import client_identity
from .notifier import McpNotifier

Params = TypeVar("Params", bound=BaseModel)


@dataclass
class Deps:
    service: KlingService
    notifier: McpNotifier
    settings: Settings

    @property
    def limit(self) -> SpendLimit:
        """`[mcp]`'s limits, over every MCP task of the store."""
        limits = self.settings.mcp
        return SpendLimit(
            "mcp",
            Scope(origin_kind="mcp"),
            daily_credits=limits.daily_credit_budget,
            max_credits_per_video=limits.max_credits_per_video,
            daily_key="daily_credit_budget",
        )

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


class KlingMCPServer(MCPServer):
    """`MCPServer` holding the `Deps`, whose argument errors say which field, which rule, and that nothing was
    spent (the SDK's default is pydantic's dump, with links)."""

    def __init__(self, deps: Deps, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deps = deps

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
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:  # a crash: the SDK logs it with its traceback and shows no detail
            raise
        except ToolError as exc:
            if not isinstance(exc.__cause__, ValidationError):  # our own words, without the SDK's prefix
                raise ToolError(str(exc).removeprefix(f"Error executing tool {name}: ")) from exc
            message = str(RequestValidationError(describe_validation_error(exc.__cause__)))
            spent = "\nNothing was spent." if name == "generate_video" else ""
            raise ToolError(message + spent) from None


def deps_of(ctx: Context[Any, Any]) -> Deps:
    server = ctx.mcp_server
    assert isinstance(server, KlingMCPServer)
    return server.deps
