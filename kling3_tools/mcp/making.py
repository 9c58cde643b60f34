"""The MCP tools that build on a finished video (extend, lip-sync) and the characters placed in new ones. They
spend through the same path as `generate_video` (checked for this caller, approved, reserved by the ledger)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, Elicit, ElicitationResult
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Resolve
from pydantic import BaseModel, Field

from ..adapters.assets.inputs import CheckedRequest, LocalFiles
from ..domain.catalog import TaskType
from ..domain.characters import MAX_IMAGES, MIN_IMAGES, Character
from ..domain.errors import KlingError
from ..domain.records import owner_of
from .outputs import SpendApproval, VideoTask
from .server import deps_of, said
from .tools import WaitSeconds, examined, mcp_origin, request_approval, request_field, start

SourceTask = Annotated[str, Field(description="The task id of a finished video of yours (from generate_video).")]
ExtendType = Literal[TaskType.O3_STD_VIDEO_EXTEND, TaskType.O3_PRO_VIDEO_EXTEND]
IMAGES = "http(s) URLs or data: URIs, the first from the front."
NO_PATHS = LocalFiles(paths=False, refusal="server-side paths are refused here; give an http(s) URL")


async def extension(
    ctx: Context[Any, Any],
    task_id: SourceTask,
    prompt: str,
    type: ExtendType = TaskType.O3_STD_VIDEO_EXTEND,
    duration: int | None = None,
) -> CheckedRequest:
    return await examined(ctx, {"type": type, "prompt": prompt, "duration": duration, "source_task": task_id}, NO_PATHS)


async def approve_extension(
    ctx: Context[Any, Any], checked: Annotated[CheckedRequest, Resolve(extension)]
) -> Elicit[SpendApproval] | SpendApproval:
    return await request_approval(ctx, checked)


async def extend_video(
    ctx: Context[Any, Any],
    checked: Annotated[CheckedRequest, Resolve(extension)],
    approval: Annotated[ElicitationResult[SpendApproval], Resolve(approve_extension)],
    task_id: SourceTask,
    prompt: Annotated[str, Field(min_length=1, max_length=2000, description="What happens next.")],
    type: Annotated[ExtendType, Field(description="Standard (default) or Pro.")] = TaskType.O3_STD_VIDEO_EXTEND,
    duration: Annotated[int | None, request_field("duration")] = None,
    wait_seconds: WaitSeconds = None,
) -> VideoTask:
    """The next shot of a finished video of yours, as a new video linked to it. Spends credits (Kling's own API)."""
    return await start(ctx, checked, approval, wait_seconds)


async def speech(
    ctx: Context[Any, Any],
    task_id: SourceTask,
    text: str | None = None,
    voice: str | None = None,
    audio: str | None = None,
) -> CheckedRequest:
    fields = {"type": TaskType.LIP_SYNC, "source_task": task_id, "text": text, "voice": voice, "audio": audio}
    return await examined(ctx, fields, NO_PATHS)


async def approve_speech(
    ctx: Context[Any, Any], checked: Annotated[CheckedRequest, Resolve(speech)]
) -> Elicit[SpendApproval] | SpendApproval:
    return await request_approval(ctx, checked)


async def lip_sync(
    ctx: Context[Any, Any],
    checked: Annotated[CheckedRequest, Resolve(speech)],
    approval: Annotated[ElicitationResult[SpendApproval], Resolve(approve_speech)],
    task_id: SourceTask,
    text: Annotated[str | None, request_field("text")] = None,
    voice: Annotated[str | None, request_field("voice")] = None,
    audio: Annotated[
        str | None, Field(description="Lip-sync: the speech, an http(s) URL (mp3, wav, m4a, aac).")
    ] = None,
    wait_seconds: WaitSeconds = None,
) -> VideoTask:
    """A finished video of yours, its speaker saying `text` or `audio`: a new video linked to it. Spends credits."""
    return await start(ctx, checked, approval, wait_seconds)


class CharacterList(BaseModel):
    characters: list[Character]


async def create_character(
    ctx: Context[Any, Any],
    name: Annotated[str, Field(min_length=1, max_length=20, description="How videos name it.")],
    images: Annotated[list[str], Field(min_length=MIN_IMAGES, max_length=MAX_IMAGES, description=IMAGES)],
    description: Annotated[str, Field(max_length=100, description="What it is, in a few words.")] = "",
) -> Character:
    """Make a character from 2-4 images, to place in videos by name (generate_video's `characters`). Takes a
    minute; Kling does not charge for it."""
    deps = deps_of(ctx)
    try:
        return await deps.service.characters.create(
            owner_of(mcp_origin(ctx)), name, list(images), description, files=NO_PATHS
        )
    except KlingError as exc:
        raise ToolError(said(exc)) from None


async def list_characters(ctx: Context[Any, Any]) -> CharacterList:
    """Your characters, by name."""
    return CharacterList(characters=await deps_of(ctx).service.characters.of(owner_of(mcp_origin(ctx))))


async def delete_character(
    ctx: Context[Any, Any], name: Annotated[str, Field(min_length=1, max_length=20)]
) -> CharacterList:
    """Forget one of your characters (and delete it at Kling); answers with those left."""
    deps, owner = deps_of(ctx), owner_of(mcp_origin(ctx))
    try:
        await deps.service.characters.delete(owner, name)
    except KlingError as exc:
        raise ToolError(said(exc)) from None
    return CharacterList(characters=await deps.service.characters.of(owner))
