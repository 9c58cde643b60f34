"""MCP prompts: the slash commands clients show in their menus. Each leads the assistant through the same
safe steps: price first, the user's yes, then generate, then wait."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import Field

from ..domain import catalog
from ..domain.catalog import AspectRatio, TaskType
from .server import NotYours, deps_of

TEXT_TYPES = [spec.type.value for spec in catalog.list_models() if spec.mode is catalog.Mode.TEXT]
DURATIONS = [str(seconds) for seconds in range(catalog.MIN_DURATION, catalog.MAX_DURATION + 1)]
How = Literal["edit", "continue"]
STEPS = (
    "First call estimate_video_cost and tell me the price; wait for my yes before calling generate_video, "
    "which spends credits. Then call wait_for_video with the task id until the video is ready, and show me its URL."
)


def make_video(
    subject: Annotated[str, Field(min_length=1, description="What the video shows")],
    style: Annotated[str, Field(description="A look or mood, e.g. 'film noir', 'watercolour'")] = "",
    type: Annotated[str, Field(description=f"A text-to-video type: {', '.join(TEXT_TYPES)}")] = TEXT_TYPES[0],
    duration: Annotated[str, Field(description=f"Seconds, {catalog.MIN_DURATION}-{catalog.MAX_DURATION}")] = str(
        catalog.DEFAULT_DURATION
    ),
    aspect_ratio: Annotated[str, Field(description="16:9, 9:16 or 1:1")] = catalog.DEFAULT_ASPECT_RATIO.value,
) -> str:
    """Make a video from a description, with its price shown before anything is spent."""
    if type not in TEXT_TYPES:
        raise _refused(f"type must be one of {', '.join(TEXT_TYPES)}")
    if duration not in DURATIONS:
        raise _refused(f"duration must be a whole number of seconds, {catalog.MIN_DURATION}-{catalog.MAX_DURATION}")
    if aspect_ratio not in {ratio.value for ratio in AspectRatio}:
        raise _refused(f"aspect_ratio must be one of {', '.join(ratio.value for ratio in AspectRatio)}")
    ratio = AspectRatio(aspect_ratio)
    look = f", in the style of {style}" if style.strip() else ""
    return (
        f"Make a video of {subject.strip()}{look}. Use the Kling type {type}, {duration} seconds, "
        f"aspect ratio {ratio.value}; write a vivid prompt for it (what is seen, the camera, the light). {STEPS}"
    )


async def remix_video(
    ctx: Context[Any, Any],
    task_id: Annotated[str, Field(description="One of your finished videos")],
    change: Annotated[str, Field(min_length=1, description="What should change, or what happens next")],
    how: Annotated[
        Literal["edit", "continue"], Field(description="edit: change this video; continue: a next shot")
    ] = "edit",
) -> str:
    """Edit one of your videos, or continue it with a next shot."""
    try:
        record = await deps_of(ctx).own_record(task_id, ctx)
    except NotYours as exc:
        raise _refused(str(exc)) from None
    video = await deps_of(ctx).service.videos.lasting_url(record) if record is not None else None
    if record is None or not video:
        raise _refused(f"Task {task_id} has no finished video here; check it with get_video_status.")
    if how == "edit":
        step = f"Edit it with generate_video type={TaskType.O3_STD_VIDEO_EDIT.value}, video={video}"
    else:
        step = (
            f"Continue it with generate_video type={TaskType.O3_PRO_REFERENCE_TO_VIDEO.value}, "
            f"video={video} as the reference"
        )
    return (
        f"My video {task_id} ({record.type}) showed: {record.request.get('prompt', '')}\n"
        f"I want: {change.strip()}\n{step}, and a prompt that says what changes. {STEPS}"
    )


def _refused(message: str) -> MCPError:
    """An error whose words reach the client (the SDK replaces any other with "Error rendering prompt")."""
    return MCPError(code=INVALID_PARAMS, message=message)
