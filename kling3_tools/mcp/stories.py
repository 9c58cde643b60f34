"""The story tools and resource: plan a story, start it (one approval for its total), follow it."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Resolve
from pydantic import Field

from ..domain.errors import KlingError, RequestValidationError, SpendingRefusedError
from ..domain.story import Story
from ..domain.story_plan import Plan, plan
from ..domain.story_record import StoryRecord
from .outputs import SpendApproval, StoryPlan, StoryStatus, to_story
from .server import NotYours, deps_of, said
from .task_answers import started
from .tools import approval, mcp_origin

StoryJson = Annotated[
    dict[str, Any],
    Field(
        description="A story: request fields as defaults for every shot, `shots` (each a request with an `id`; "
        'a URL field may be "@shot" for its video or "@shot.last_frame" / "@shot.first_frame"), and `cut` '
        '({"shots": [...], "transition": "cut" | "crossfade"}).'
    ),
]
StoryId = Annotated[str, Field(description="The story_id from start_story.")]


def checked_story(ctx: Context[Any, Any], story: StoryJson) -> Plan:
    try:
        return plan(Story.from_mapping(story), deps_of(ctx).service.prices, deps_of(ctx).settings.takes_fields)
    except RequestValidationError as exc:
        raise ToolError(f"{exc}\nNothing was spent.") from None


async def approve_story(
    ctx: Context[Any, Any], story_plan: Annotated[Plan, Resolve(checked_story)]
) -> Elicit[SpendApproval] | SpendApproval:
    shots = f"a story of {len(story_plan.requests)} shots"
    return await approval(ctx, story_plan.total, detail=shots, what="This story", dearest=story_plan.dearest)


async def plan_story(ctx: Context[Any, Any], story: StoryJson) -> StoryPlan:
    """Check a multi-shot story before spending: every problem of every shot at once, the order, each shot's
    price, the total and whether the limits allow it. Spends nothing."""
    deps = deps_of(ctx)
    story_plan = checked_story(ctx, story)
    try:
        await deps.service.check_spend(story_plan.total, await deps.limits(ctx), dearest=story_plan.dearest)
        refused = None
    except SpendingRefusedError as exc:
        refused = said(exc)
    return StoryPlan(
        title=story_plan.story.title,
        stages=story_plan.stages,
        credits={shot: story_plan.credits(shot) for shot in story_plan.requests},
        total=story_plan.total,
        film=story_plan.story.film,
        transition=story_plan.story.cut.transition,
        refused=refused,
    )


async def start_story(
    ctx: Context[Any, Any],
    story: StoryJson,
    story_plan: Annotated[Plan, Resolve(checked_story)],
    approved: Annotated[ElicitationResult[SpendApproval], Resolve(approve_story)],
) -> StoryStatus:
    """Start a multi-shot story: its whole cost is reserved at once (so no shot is refused halfway), then the
    shots run as soon as their inputs exist and are cut into one film. Spends credits: plan_story first.
    Answers at once; follow it with get_story_status or the story's resource."""
    if not (isinstance(approved, AcceptedElicitation) and approved.data.approve):
        raise ToolError(f"Not started: the user did not approve spending {story_plan.total} credits.")
    deps = deps_of(ctx)
    try:
        record = await deps.service.start_story(story_plan.story, mcp_origin(ctx), limits=await deps.limits(ctx))
    except KlingError as exc:
        raise ToolError(said(exc)) from None
    await started(ctx, story_id=record.story_id)  # run as an MCP task: its client follows the handle
    return to_story(record)


async def own_story(story_id: str, ctx: Context[Any, Any]) -> StoryRecord:
    try:
        return await deps_of(ctx).own_story(story_id, ctx)
    except NotYours as exc:
        raise ToolError(str(exc)) from None


async def get_story_status(ctx: Context[Any, Any], story_id: StoryId) -> StoryStatus:
    """Where a story stands: each shot's state, then the film."""
    return to_story(await own_story(story_id, ctx))


async def story_resource(story_id: str, ctx: Context[Any, Any]) -> str:
    """One story: each shot's progress, then the film."""
    return to_story(await own_story(story_id, ctx)).model_dump_json()
