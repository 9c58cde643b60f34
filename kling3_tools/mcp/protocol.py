"""The protocol methods beside tools and resources: `resources/subscribe` and `resources/unsubscribe` and
`logging/setLevel` (2025-11-25 sessions; 2026-07-28 sessions use `subscriptions/listen`), and
`completion/complete` for the task resource and the prompts' arguments."""

from __future__ import annotations

import functools
import re
from typing import Any, get_args

from mcp.server.mcpserver import Context
from mcp.server.subscriptions import ListenHandler, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmptyResult,
    PromptReference,
    ResourceTemplateReference,
    SetLevelRequestParams,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    UnsubscribeRequestParams,
)

from ..domain import catalog
from . import prompts
from .outputs import MODELS_URI, STORY_URI, TASK_URI
from .server import NotYours, deps_of

MAX_COMPLETIONS = 100  # the most one answer may hold
TASK_URI_PATTERN = re.compile("^" + re.escape(TASK_URI).replace(re.escape("{task_id}"), "(?P<task_id>[^/]+)") + "$")
STORY_URI_PATTERN = re.compile("^" + re.escape(STORY_URI).replace(re.escape("{story_id}"), "(?P<story_id>[^/]+)") + "$")


async def _may_follow(ctx: Context[Any, Any], uri: str) -> None:
    """A URI this client may be told about: one of its own tasks or stories, or the models (which never
    change)."""
    if uri == MODELS_URI:
        return
    deps = deps_of(ctx)
    try:
        if task := TASK_URI_PATTERN.match(uri):
            await deps.own_record(task["task_id"], ctx)
        elif story := STORY_URI_PATTERN.match(uri):
            await deps.own_story(story["story_id"], ctx)
        else:
            raise MCPError(code=INVALID_PARAMS, message=f"No such resource: {uri}")
    except NotYours as exc:
        raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None


async def subscribe(ctx: Context[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
    """2025-11-25: follow one of this client's tasks."""
    await _may_follow(ctx, str(params.uri))
    deps_of(ctx).notifier.subscribe(ctx, str(params.uri))
    return EmptyResult()


class Listen:
    """2026-07-28 `subscriptions/listen`: the SDK's stream, once every task URI asked for is the caller's
    (the SDK's handler would follow any URI, telling one client when another's video changes)."""

    def __init__(self, bus: SubscriptionBus) -> None:
        self.streams = ListenHandler(bus)

    async def __call__(
        self, ctx: Context[Any, Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        for uri in params.notifications.resource_subscriptions or ():
            await _may_follow(ctx, str(uri))
        task_ids = (params.notifications.model_extra or {}).get("taskIds")  # the tasks extension's filter
        if not task_ids:
            return await self.streams(ctx.request_context, params)
        if not isinstance(task_ids, list) or not all(isinstance(task_id, str) for task_id in task_ids):
            raise MCPError(code=INVALID_PARAMS, message="taskIds must be a list of task ids")
        return await deps_of(ctx).task_views.listen(
            ctx.request_context, task_ids, functools.partial(self.streams, params=params)
        )


async def unsubscribe(ctx: Context[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
    deps_of(ctx).notifier.unsubscribe(ctx, str(params.uri))
    return EmptyResult()


async def set_level(ctx: Context[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
    deps_of(ctx).notifier.set_level(ctx, params.level)
    return EmptyResult()


async def complete(ctx: Context[Any, Any], params: CompleteRequestParams) -> CompleteResult:
    """Values for an argument that start with what the user typed; an unknown reference gets none."""
    typed = params.argument.value
    matching = [value for value in await _candidates(ctx, params.ref, params.argument.name) if value.startswith(typed)]
    return CompleteResult(
        completion=Completion(
            values=matching[:MAX_COMPLETIONS], total=len(matching), has_more=len(matching) > MAX_COMPLETIONS
        )
    )


async def _candidates(ctx: Context[Any, Any], ref: PromptReference | ResourceTemplateReference, name: str) -> list[str]:
    if name == "task_id" and (
        (isinstance(ref, ResourceTemplateReference) and ref.uri == TASK_URI)
        or (isinstance(ref, PromptReference) and ref.name == "remix_video")
    ):
        return await own_task_ids(ctx)
    if isinstance(ref, PromptReference):
        return PROMPT_CHOICES.get((ref.name, name), [])
    return []


async def own_task_ids(ctx: Context[Any, Any], *, limit: int = MAX_COMPLETIONS + 1) -> list[str]:
    """This client's task ids, newest first (every MCP task's over stdio, or with `[mcp] share_tasks`)."""
    deps = deps_of(ctx)
    records = await deps.service.recent(origin_kind="mcp", owner=deps.identity(ctx), limit=limit)
    return [record.task_id for record in records]


PROMPT_CHOICES: dict[tuple[str, str], list[str]] = {
    ("make_video", "type"): prompts.TEXT_TYPES,
    ("make_video", "aspect_ratio"): [ratio.value for ratio in catalog.AspectRatio],
    ("make_video", "duration"): prompts.DURATIONS,
    ("remix_video", "how"): list(get_args(prompts.How)),
}
