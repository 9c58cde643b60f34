"""The MCP tools and resources, each a module-level function beside the resolvers it uses.

Translation only: validation, prices, limits, submitting, tracking and waiting
live in the core, reached through `KlingService`. The request's fields are not
written here: `generate_video` and its resolver take the request model's own
fields (description, bounds), so the tool schema and the core always agree.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit

from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import ListRoots, Resolve
from mcp_types import ListRootsResult
from pydantic import Field

from ..adapters.assets.inputs import CheckedRequest, LocalFiles, names_paths
from ..adapters.store import StatusFilter
from ..domain.catalog import TaskType
from ..domain.errors import KlingError, RequestValidationError, SpendingRefusedError
from ..domain.models import GenerateRequest
from ..domain.records import McpOrigin, TaskRecord, owner_of, person_number
from ..domain.rules import quote
from .http import client_identity
from .outputs import (
    CostEstimate,
    ModelList,
    SpendApproval,
    VideoList,
    VideoTask,
    from_task,
    model_list,
    to_video,
)
from .server import Deps, NotYours, deps_of, said
from .task_answers import started

PROGRESS_EVERY = 3.0

GENERATE_DESCRIPTION = (  # one string, not a docstring: the SDK would keep a docstring's indentation
    "Start a Kling video. Spends credits (see estimate_video_cost); returns at once or after wait_seconds. "
    "Image-to-video needs `image`; video-edit needs `video` (for example a URL from an earlier result) and takes "
    "neither `duration` nor `sound`; reference-to-video takes up to 7 `images` and/or a `video`."
)

Fn = TypeVar("Fn", bound=Callable[..., Any])
WaitSeconds = Annotated[
    float | None,
    Field(ge=0, le=55, description="Seconds to wait for the video before answering (default from config)."),
]


def request_field(name: str) -> Any:
    """The request model's own field, for the tools that take one of them."""
    return GenerateRequest.model_fields[name]


def takes_request_fields(fn: Fn) -> Fn:
    """Give `fn` (which takes `**fields`) one keyword parameter per request field, annotated with the model's
    own field, before its other keyword parameters: the SDK reads these for the schema and the resolvers."""
    signature = inspect.signature(fn, eval_str=True)
    fields = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[field.annotation, field],
            default=inspect.Parameter.empty if field.is_required() else None,
        )
        for name, field in GenerateRequest.model_fields.items()
    ]
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    positional = [p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
    parameters = positional + fields + keyword
    fn.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
    return fn


def mcp_origin(ctx: Context[Any, Any]) -> McpOrigin:
    """Where this caller's results go: its connection, for the one who may see them."""
    deps = deps_of(ctx)
    params = getattr(ctx.request_context.session, "client_params", None)
    payer = client_identity(ctx)  # the caller's own limits count it, whoever `share_tasks` lets see it
    return McpOrigin(
        session=deps.notifier.connection(ctx),
        client_name=params.client_info.name if params is not None else None,
        owner=deps.identity(ctx),
        user_id=None if payer is None else person_number(payer),
    )


async def own_record(task_id: str, ctx: Context[Any, Any]) -> TaskRecord | None:
    try:
        return await deps_of(ctx).own_record(task_id, ctx)
    except NotYours as exc:
        raise ToolError(str(exc)) from None


async def wait_for(task_id: str, timeout: float, ctx: Context[Any, Any]) -> VideoTask:
    """Follow the store (the poller keeps it current), reporting progress every few seconds."""
    service = deps_of(ctx).service
    started = time.monotonic()
    record = await own_record(task_id, ctx)
    if record is None:
        try:
            return from_task((await service.status(task_id)).task)
        except KlingError as exc:
            raise ToolError(said(exc)) from None
    expected = await service.expected_finish(record) - record.submitted_at
    asked = started
    while record.is_tracking:
        waited = time.monotonic() - started
        if waited >= timeout:
            return await to_video(service, record, waited_out=True)
        age = time.time() - record.submitted_at
        await ctx.report_progress(
            progress=age,
            total=max(expected, age + 1),
            message=f"{record.raw_status or 'running'} for {int(age // 60)}:{int(age % 60):02d}",
        )
        await asyncio.sleep(min(PROGRESS_EVERY, timeout - waited))
        fresh, asked = await service.follow(task_id, asked_at=asked)
        record = fresh or record
    return await to_video(service, record)


# --- the spending decision, made before the tool body runs -------------------------------


@takes_request_fields
def client_roots(ctx: Context[Any, Any], **fields: Any) -> ListRoots | ListRootsResult:
    """The folders a stdio client shares, asked only when the request names a local path and the client
    declares roots; no roots means no limit (over HTTP no path is read at all)."""
    capabilities = ctx.client_capabilities
    if ctx.headers is None and names_paths(fields) and capabilities is not None and capabilities.roots is not None:
        return ListRoots()
    return ListRootsResult(roots=[])


def local_files(ctx: Context[Any, Any], roots: ListRootsResult) -> LocalFiles:
    """What this caller may give as local inputs: over HTTP no server-side path; over stdio paths inside
    its roots when it declares any."""
    if ctx.headers is not None:
        return LocalFiles(paths=False, refusal="server-side paths are refused over HTTP; give a URL or a data: URI")
    folders = tuple(Path(unquote(urlsplit(str(root.uri)).path)) for root in roots.roots)
    return LocalFiles(roots=folders)


@takes_request_fields
async def checked_request(
    ctx: Context[Any, Any], roots: Annotated[ListRootsResult, Resolve(client_roots)], **fields: Any
) -> CheckedRequest:
    """The request as it will be priced and approved (local inputs checked, not yet uploaded)."""
    return await examined(ctx, fields, local_files(ctx, roots))


async def examined(ctx: Context[Any, Any], fields: dict[str, Any], files: LocalFiles) -> CheckedRequest:
    """`fields` checked for this caller (their own videos and characters), or a tool error saying why."""
    try:
        return await deps_of(ctx).service.examine(fields, files, owner=owner_of(mcp_origin(ctx)))
    except RequestValidationError as exc:
        raise ToolError(f"{exc}\nNothing was spent.") from None


async def approve_spending(
    ctx: Context[Any, Any], checked: Annotated[CheckedRequest, Resolve(checked_request)]
) -> Elicit[SpendApproval] | SpendApproval:
    return await request_approval(ctx, checked)


async def request_approval(ctx: Context[Any, Any], checked: CheckedRequest) -> Elicit[SpendApproval] | SpendApproval:
    request = checked.request
    credits = request.estimated_credits(deps_of(ctx).service.prices)
    return await approval(ctx, credits, detail=str(request.type), what="This video")


async def approval(
    ctx: Context[Any, Any], credits: int, *, detail: str, what: str, dearest: int | None = None
) -> Elicit[SpendApproval] | SpendApproval:
    """Approved at once at or under `[mcp] confirm_above_credits`; above it, asked of the user when the client
    can be asked (after the limits were checked, so nobody approves what they would refuse anyway)."""
    deps = deps_of(ctx)
    if not deps.needs_confirmation(credits):
        return SpendApproval(approve=True)  # the reservation checks the limits; nobody is asked anything
    try:
        await deps.service.check_spend(credits, await deps.limits(ctx), dearest=dearest)
    except SpendingRefusedError as exc:
        raise ToolError(said(exc)) from None
    capabilities = ctx.client_capabilities
    if capabilities is not None and capabilities.elicitation is not None:
        return Elicit(f"This will spend {credits} credits ({detail}). Continue?", SpendApproval)
    if deps.settings.mcp.when_cannot_confirm == "allow":
        return SpendApproval(approve=True)
    raise ToolError(
        f"{what} costs {credits} credits, above confirm_above_credits = {deps.settings.mcp.confirm_above_credits}"
        ", and this client cannot ask the user to confirm. Nothing was spent. To allow it, raise "
        '[mcp] confirm_above_credits or set [mcp] when_cannot_confirm = "allow".'
    )


# --- tools ---------------------------------------------------------------------------------


@takes_request_fields
async def generate_video(
    ctx: Context[Any, Any],
    checked: Annotated[CheckedRequest, Resolve(checked_request)],
    approval: Annotated[ElicitationResult[SpendApproval], Resolve(approve_spending)],
    *,
    wait_seconds: WaitSeconds = None,
    **fields: Any,
) -> VideoTask:
    return await start(ctx, checked, approval, wait_seconds)


async def start(
    ctx: Context[Any, Any],
    checked: CheckedRequest,
    approval: ElicitationResult[SpendApproval],
    wait_seconds: float | None,
) -> VideoTask:
    """Upload, submit through the ledger (once approved) and wait the bounded time: every tool that spends."""
    if not (isinstance(approval, AcceptedElicitation) and approval.data.approve):
        service = deps_of(ctx).service
        credits = checked.request.estimated_credits(service.prices)
        raise ToolError(f"Not started: the user did not approve spending {credits} {service.unit}.")
    deps = deps_of(ctx)
    origin = mcp_origin(ctx)
    try:
        request = await deps.service.prepare(checked)  # local inputs uploaded now
        record = await deps.service.submit(request, origin, limits=await deps.limits(ctx))
    except KlingError as exc:
        raise ToolError(said(exc)) from None
    wait = deps.settings.mcp.wait_seconds if wait_seconds is None else wait_seconds
    if await started(ctx, task_id=record.task_id):  # run as an MCP task: its client follows the handle
        wait = 0
    return await wait_for(record.task_id, wait, ctx) if wait > 0 else await to_video(deps.service, record)


async def wait_for_video(
    ctx: Context[Any, Any],
    task_id: Annotated[str, Field(description="The task id from generate_video.")],
    timeout_seconds: Annotated[
        float, Field(ge=1, le=3600, description="Give up waiting after this (the task goes on).")
    ] = 50,
) -> VideoTask:
    """Wait for a video, with progress notifications; returns its URL, or its status when still running."""
    return await wait_for(task_id, timeout_seconds, ctx)


async def get_video_status(
    ctx: Context[Any, Any],
    task_id: Annotated[str, Field(description="The task id from generate_video.")],
) -> VideoTask:
    """The current status of a video task, asked of the API now."""
    service = deps_of(ctx).service
    await own_record(task_id, ctx)
    try:
        checked = await service.status(task_id)
    except KlingError as exc:
        raise ToolError(said(exc)) from None
    return await to_video(service, checked.record) if checked.record is not None else from_task(checked.task)


async def estimate_video_cost(
    ctx: Context[Any, Any],
    type: Annotated[TaskType, request_field("type")],
    duration: Annotated[int | None, request_field("duration")] = None,
    sound: Annotated[bool | None, request_field("sound")] = None,
) -> CostEstimate:
    """What a video would cost, and what is left of today's budget. Spends nothing."""
    deps = deps_of(ctx)
    try:
        credits = quote(type, duration, sound, deps.service.prices)
    except RequestValidationError as exc:
        raise ToolError(str(exc)) from None
    limit = (await deps.limits(ctx))[-1]  # the caller's own when they have one
    usage = await deps.service.usage(limit)
    return CostEstimate(
        type=type.value,
        credits=credits,
        price=deps.service.prices[type].describe(deps.service.unit),
        spent_today=usage.credits,
        left_today=limit.left(usage),
        needs_confirmation=deps.needs_confirmation(credits),
    )


def list_video_models(ctx: Context[Any, Any]) -> ModelList:
    """The task types the provider offers: modes, duration limits, accepted fields and prices."""
    return model_list(deps_of(ctx).service)


async def list_videos(
    ctx: Context[Any, Any],
    status: Annotated[StatusFilter | None, Field(description="Only these.")] = None,
    limit: Annotated[int, Field(ge=1, le=100, description="How many, newest first.")] = 20,
) -> VideoList:
    """Your videos submitted through this server, newest first, from the local task store."""
    deps = deps_of(ctx)
    records = await deps.service.recent(status=status, origin_kind="mcp", owner=deps.identity(ctx), limit=limit)
    return VideoList(videos=[await to_video(deps.service, r) for r in records])


# --- resources ---------------------------------------------------------------------------


def models_resource(deps: Deps) -> str:
    """Every task type with its limits and prices."""
    return model_list(deps.service).model_dump_json()


async def task_resource(task_id: str, ctx: Context[Any, Any]) -> str:
    """One video task: status, credits, video URLs."""
    service = deps_of(ctx).service
    record = await own_record(task_id, ctx)
    if record is not None:
        return (await to_video(service, record)).model_dump_json()
    try:
        return from_task((await service.status(task_id)).task).model_dump_json()
    except KlingError as exc:
        raise ToolError(said(exc)) from None
