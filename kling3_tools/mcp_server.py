"""The MCP server: Kling video generation as typed tools for AI assistants and agents.

Wiring only. Validation, prices, budgets, submitting, tracking and waiting live
in the core; this module translates them into MCP tools, resources, progress
notifications and elicitation. Run it with `kling3 mcp [--sandbox]` or
`kling3-mcp`. Over stdio nothing but protocol goes to stdout (logs: stderr).

No `from __future__ import annotations` here: the SDK reads the tools' annotations, and those name
resolvers defined inside `build_server`, so they must be evaluated where they are written.
"""

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.resolve import Resolve
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from . import __version__, catalog
from .catalog import AspectRatio, TaskType
from .config import Settings
from .errors import KlingError, RequestValidationError, SpendingRefusedError
from .ledger import Scope, SpendLimit
from .models import GenerateRequest, Task, describe_validation_error, quote
from .records import McpOrigin, Outcome, TaskRecord
from .service import KlingService
from .store import StatusFilter

log = logging.getLogger("kling3_tools.mcp")

TASK_URI = "kling://tasks/{task_id}"
MODELS_URI = "kling://models"
PROGRESS_EVERY = 3.0


GENERATE_DESCRIPTION = (  # one string, not a docstring: the SDK would keep a docstring's indentation
    "Start a Kling video. Spends credits (see estimate_video_cost); returns at once or after wait_seconds. "
    "Image-to-video needs `image`; video-edit needs `video` (for example a URL from an earlier result) and takes "
    "neither `duration` nor `sound`; reference-to-video takes up to 7 `images` and/or a `video`."
)


def task_uri(task_id: str) -> str:
    return TASK_URI.format(task_id=task_id)


# --- outputs --------------------------------------------------------------------------


class VideoTask(BaseModel):
    """A video task as the assistant sees it."""

    task_id: str
    type: str | None = None
    status: Literal["queued", "running", "succeeded", "failed", "timed_out"]
    raw_status: str = ""
    estimated_credits: int | None = None
    consumed_credits: int | None = None
    video_urls: list[str] = Field(default_factory=list)
    local_path: str | None = None
    error_message: str | None = None
    submitted_at: datetime | None = None
    expected_finish: datetime | None = Field(default=None, description="When the video is likely ready.")
    resource_uri: str
    next_step: str = Field(description="What to do next, in a sentence.")


class CostEstimate(BaseModel):
    type: str
    credits: int
    price: str
    spent_today: int
    left_today: int | None = Field(description="Credits left in the 24-hour budget; null when there is none.")
    needs_confirmation: bool


class VideoModel(BaseModel):
    type: str
    family: str
    tier: str
    mode: str
    description: str
    duration: list[int] | str
    price: str
    credits_default: int
    fields: list[str]
    required: list[str]


class ModelList(BaseModel):
    models: list[VideoModel]


class VideoList(BaseModel):
    videos: list[VideoTask]


class SpendApproval(BaseModel):
    """The user's answer to "This will spend N credits. Continue?"."""

    approve: bool = Field(default=True, description="Start the video and spend the credits")


# --- delivery back to the assistant ---------------------------------------------------


class McpNotifier:
    """Tells MCP clients when their task ends: a resource-updated event and a log line with the URL."""

    kind = "mcp"

    def __init__(self, bus: InMemorySubscriptionBus) -> None:
        self.bus = bus
        self._stdio_id = f"stdio-{uuid.uuid4().hex[:12]}"
        # The SDK hands each request its own session proxy; the latest one of a connection can still
        # notify that connection after the request ended. Dropped when a send fails.
        self._sessions: dict[str, Any] = {}

    def session_id(self, ctx: Context[Any, Any]) -> str:
        """The id of the client connection behind `ctx` (one per process over stdio), remembered."""
        headers = ctx.headers or {}
        connection = headers.get("mcp-session-id") or self._stdio_id
        self._sessions[connection] = ctx.request_context.session
        return connection

    async def deliver(self, record: TaskRecord) -> None:
        await self._announce(record, final=True)

    async def progress(self, record: TaskRecord) -> None:
        await self._announce(record, final=False)

    async def _announce(self, record: TaskRecord, *, final: bool) -> None:
        uri = task_uri(record.task_id)
        await self.bus.publish(ResourceUpdated(uri=uri))
        connection = record.origin.session if isinstance(record.origin, McpOrigin) else ""
        session = self._sessions.get(connection)
        if session is None:
            return  # that client is gone; the result stays readable as a resource and in list_videos
        try:
            await session.send_resource_updated(uri)
            if final:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # logging is deprecated in 2026-07-28 but clients still show it
                    await session.send_log_message(
                        level="info" if record.outcome is Outcome.SUCCEEDED else "warning",
                        data={"message": _finished_sentence(record), "task_id": record.task_id, "uri": uri},
                        logger="kling3",
                    )
        except Exception as exc:  # a closed session is not a reason to retry for a day
            log.info("could not notify the MCP session of %s: %s", record.task_id, exc)
            self._sessions.pop(connection, None)


def _finished_sentence(record: TaskRecord) -> str:
    if record.outcome is Outcome.SUCCEEDED:
        return f"Video {record.task_id} is ready: {record.video_url}"
    if record.outcome is Outcome.TIMED_OUT:
        return f"Video {record.task_id} timed out: {record.error_message}"
    return f"Video {record.task_id} failed: {record.error_message}"


# --- the server ---------------------------------------------------------------------


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


class KlingMCPServer(MCPServer):
    """`MCPServer` whose argument errors read like the core's own: which field, which rule, and that
    nothing was spent (the SDK's default is pydantic's dump, with links)."""

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


def _field(name: str) -> Any:
    """The request model's own field (description, bounds), so the tool schema and the core agree."""
    return GenerateRequest.model_fields[name]


def build_server(deps: Deps) -> MCPServer:
    service, notifier, limit = deps.service, deps.notifier, deps.limit
    confirm_above = deps.settings.mcp.confirm_above_credits
    mcp = KlingMCPServer(
        "kling3",
        version=__version__,
        instructions=(
            "Make videos with Kling 3.0 and Kling Video O3. Check prices with estimate_video_cost before "
            "generate_video: every generate spends the user's credits. Videos take minutes; when "
            "generate_video answers 'running', call wait_for_video with its task_id."
        ),
        subscriptions=notifier.bus,
    )

    async def to_video(record: TaskRecord, *, waited_out: bool = False) -> VideoTask:
        expected_at = await service.expected_finish(record)
        return VideoTask(
            task_id=record.task_id,
            type=record.type,
            status=record.display_status,
            raw_status=record.raw_status,
            estimated_credits=record.estimated_credits,
            consumed_credits=record.consumed_credits,
            video_urls=record.video_urls,
            local_path=record.local_path,
            error_message=record.error_message,
            submitted_at=datetime.fromtimestamp(record.submitted_at, UTC),
            expected_finish=datetime.fromtimestamp(expected_at, UTC),
            resource_uri=task_uri(record.task_id),
            next_step=_next_step(record, waited_out),
        )

    def from_task(task: Task) -> VideoTask:
        return VideoTask(
            task_id=task.task_id,
            type=task.type,
            status=task.status.value,
            raw_status=task.raw_status,
            consumed_credits=task.consumed_credits,
            video_urls=task.video_urls,
            error_message=task.error_message,
            submitted_at=task.created_at,
            resource_uri=task_uri(task.task_id),
            next_step="Done." if task.status.is_terminal else f"Still running: call wait_for_video('{task.task_id}').",
        )

    def identity(ctx: Context[Any, Any]) -> str | None:
        return None if deps.settings.mcp.share_tasks else client_identity(ctx)

    async def own_record(task_id: str, ctx: Context[Any, Any]) -> TaskRecord | None:
        """The recorded task when this client may see it. Over HTTP, another client's task and an id the
        store does not know (which the API would describe to anyone holding the key) are refused."""
        record = await service.get(task_id)
        who = identity(ctx)
        if who is not None and (record is None or getattr(record.origin, "owner", None) != who):
            raise ToolError(f"Task {task_id} is not one of this client's videos.")
        return record

    async def wait_for(task_id: str, timeout: float, ctx: Context[Any, Any]) -> VideoTask:
        """Follow the store (the poller keeps it current), reporting progress every few seconds."""
        started = time.monotonic()
        record = await own_record(task_id, ctx)
        if record is None:
            try:
                return from_task((await service.status(task_id)).task)
            except KlingError as exc:
                raise ToolError(exc.message) from None
        expected = await service.expected_finish(record) - record.submitted_at
        asked = started
        while record.is_tracking:
            waited = time.monotonic() - started
            if waited >= timeout:
                return await to_video(record, waited_out=True)
            age = time.time() - record.submitted_at
            await ctx.report_progress(
                progress=age,
                total=max(expected, age + 1),
                message=f"{record.raw_status or 'running'} for {int(age // 60)}:{int(age % 60):02d}",
            )
            await asyncio.sleep(min(PROGRESS_EVERY, timeout - waited))
            record = await service.get(task_id) or record
            dense = service.check_interval
            stale = (record.due_at or 0) - time.time() > dense and time.monotonic() - asked > dense
            if record.is_tracking and stale:  # the poller will not look for a while: ask now, once per interval
                asked = time.monotonic()
                with contextlib.suppress(KlingError):
                    record = (await service.status(task_id)).record or record
        return await to_video(record)

    # --- the spending decision, made before the tool body runs ------------------------

    def checked_request(
        type: TaskType,
        prompt: str,
        duration: int | None,
        aspect_ratio: AspectRatio | None,
        image: str | None,
        end_image: str | None,
        video: str | None,
        images: list[str] | None,
        sound: bool | None,
        negative_prompt: str | None,
        cfg_scale: float | None,
        keep_original_sound: bool | None,
    ) -> GenerateRequest:
        try:
            return GenerateRequest.build(
                type=type, prompt=prompt, duration=duration, aspect_ratio=aspect_ratio, image=image,
                end_image=end_image, video=video, images=images, sound=sound, negative_prompt=negative_prompt,
                cfg_scale=cfg_scale, keep_original_sound=keep_original_sound,
            )  # fmt: skip
        except RequestValidationError as exc:
            raise ToolError(f"{exc}\nNothing was spent.") from None

    async def approve_spending(
        ctx: Context[Any, Any], request: Annotated[GenerateRequest, Resolve(checked_request)]
    ) -> Elicit[SpendApproval] | SpendApproval:
        credits = request.estimated_credits()
        if not (confirm_above and credits > confirm_above):
            return SpendApproval(approve=True)  # the reservation checks the limits; nobody is asked anything
        try:  # before asking a person to approve what the limits would refuse anyway
            await service.check_spend(credits, [limit])
        except SpendingRefusedError as exc:
            raise ToolError(exc.message) from None
        capabilities = ctx.client_capabilities
        if capabilities is not None and capabilities.elicitation is not None:
            return Elicit(f"This will spend {credits} credits ({request.type}). Continue?", SpendApproval)
        if deps.settings.mcp.when_cannot_confirm == "allow":
            return SpendApproval(approve=True)
        raise ToolError(
            f"This video costs {credits} credits, above confirm_above_credits = {confirm_above}, "
            "and this client cannot ask the user to confirm. Nothing was spent. To allow it, raise "
            '[mcp] confirm_above_credits or set [mcp] when_cannot_confirm = "allow".'
        )

    # --- tools ---------------------------------------------------------------------------

    @mcp.tool(
        title="Generate a video (spends credits)",
        description=GENERATE_DESCRIPTION,
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True),
    )
    async def generate_video(
        ctx: Context[Any, Any],
        request: Annotated[GenerateRequest, Resolve(checked_request)],
        approval: Annotated[ElicitationResult[SpendApproval], Resolve(approve_spending)],
        type: Annotated[TaskType, _field("type")],
        prompt: Annotated[str, _field("prompt")],
        duration: Annotated[int | None, _field("duration")] = None,
        aspect_ratio: Annotated[AspectRatio | None, _field("aspect_ratio")] = None,
        image: Annotated[str | None, _field("image")] = None,
        end_image: Annotated[str | None, _field("end_image")] = None,
        video: Annotated[str | None, _field("video")] = None,
        images: Annotated[list[str] | None, _field("images")] = None,
        sound: Annotated[bool | None, _field("sound")] = None,
        negative_prompt: Annotated[str | None, _field("negative_prompt")] = None,
        cfg_scale: Annotated[float | None, _field("cfg_scale")] = None,
        keep_original_sound: Annotated[bool | None, _field("keep_original_sound")] = None,
        wait_seconds: Annotated[
            float | None,
            Field(ge=0, le=55, description="Seconds to wait for the video before answering (default from config)."),
        ] = None,
    ) -> VideoTask:
        if not _approved(approval):
            raise ToolError(f"Not started: the user did not approve spending {request.estimated_credits()} credits.")
        origin = McpOrigin(session=notifier.session_id(ctx), client_name=_client_name(ctx), owner=identity(ctx))
        try:
            record = await service.submit(request, origin, limits=[limit])
        except KlingError as exc:
            raise ToolError(exc.message) from None
        wait = deps.settings.mcp.wait_seconds if wait_seconds is None else wait_seconds
        return await wait_for(record.task_id, wait, ctx) if wait > 0 else await to_video(record)

    @mcp.tool(title="Wait for a video", annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=True))
    async def wait_for_video(
        ctx: Context[Any, Any],
        task_id: Annotated[str, Field(description="The task id from generate_video.")],
        timeout_seconds: Annotated[
            float, Field(ge=1, le=3600, description="Give up waiting after this (the task goes on).")
        ] = 50,
    ) -> VideoTask:
        """Wait for a video, with progress notifications; returns its URL, or its status when still running."""
        return await wait_for(task_id, timeout_seconds, ctx)

    @mcp.tool(title="Video status", annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=True))
    async def get_video_status(
        ctx: Context[Any, Any],
        task_id: Annotated[str, Field(description="The task id from generate_video.")],
    ) -> VideoTask:
        """The current status of a video task, asked of the API now."""
        await own_record(task_id, ctx)
        try:
            checked = await service.status(task_id)
        except KlingError as exc:
            raise ToolError(exc.message) from None
        return await to_video(checked.record) if checked.record is not None else from_task(checked.task)

    @mcp.tool(title="Estimate a video's cost", annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    async def estimate_video_cost(
        type: Annotated[TaskType, _field("type")],
        duration: Annotated[int | None, _field("duration")] = None,
        sound: Annotated[bool | None, _field("sound")] = None,
    ) -> CostEstimate:
        """What a video would cost, and what is left of today's budget. Spends nothing."""
        try:
            credits = quote(type, duration, sound)
        except RequestValidationError as exc:
            raise ToolError(str(exc)) from None
        usage = await service.usage(limit)
        return CostEstimate(
            type=type.value,
            credits=credits,
            price=catalog.get_model(type).price.describe(),
            spent_today=usage.credits,
            left_today=limit.left(usage),
            needs_confirmation=bool(confirm_above and credits > confirm_above),
        )

    @mcp.tool(title="List video models", annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    def list_video_models() -> ModelList:
        """The twelve task types: modes, duration limits, accepted fields and prices in credits."""
        return _model_list()

    @mcp.tool(title="List my videos", annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    async def list_videos(
        ctx: Context[Any, Any],
        status: Annotated[StatusFilter | None, Field(description="Only these.")] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="How many, newest first.")] = 20,
    ) -> VideoList:
        """Your videos submitted through this server, newest first, from the local task store."""
        records = await service.recent(status=status, origin_kind="mcp", owner=identity(ctx), limit=limit)
        return VideoList(videos=[await to_video(r) for r in records])

    # --- resources ---------------------------------------------------------------------

    @mcp.resource(MODELS_URI, name="models", mime_type="application/json")
    def models_resource() -> str:
        """Every task type with its limits and prices."""
        return _model_list().model_dump_json()

    @mcp.resource(TASK_URI, name="task", mime_type="application/json")
    async def task_resource(task_id: str, ctx: Context[Any, Any]) -> str:
        """One video task: status, credits, video URLs."""
        record = await own_record(task_id, ctx)
        if record is not None:
            return (await to_video(record)).model_dump_json()
        try:
            return from_task((await service.status(task_id)).task).model_dump_json()
        except KlingError as exc:
            raise ToolError(exc.message) from None

    return mcp


def _model_list() -> ModelList:
    return ModelList(models=[VideoModel.model_validate(m) for m in catalog.describe_models()])


def _approved(approval: ElicitationResult[SpendApproval]) -> bool:
    return isinstance(approval, AcceptedElicitation) and approval.data.approve


def client_identity(ctx: Context[Any, Any]) -> str | None:
    """Whose tasks a caller sees over HTTP: its bearer token (hashed), else its MCP session. None over stdio,
    where the one client is the local user and sees every MCP task."""
    headers = ctx.headers
    if not headers:
        return None
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token-" + hashlib.sha256(token.strip().encode()).hexdigest()[:16]
    session = headers.get("mcp-session-id")
    return f"session-{session}" if session else None


def _client_name(ctx: Context[Any, Any]) -> str | None:
    params = getattr(ctx.request_context.session, "client_params", None)
    return params.client_info.name if params is not None else None


def _next_step(record: TaskRecord, waited_out: bool) -> str:
    if record.outcome is Outcome.SUCCEEDED:
        return "Done: show the video URL to the user."
    if record.outcome is Outcome.FAILED:
        return "The video failed; nothing more will come. The reason is in error_message."
    if record.outcome is Outcome.TIMED_OUT:
        return "It ran too long; the API may still finish it. Check later with get_video_status."
    lead = "Still running after the wait. " if waited_out else "Started. "
    return lead + f"Call wait_for_video('{record.task_id}') to get the video when it is ready."


# --- running it ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_deps(settings: Settings, *, sandbox: bool) -> AsyncIterator[Deps]:
    """The service, the notifier and an in-process poller, for the server's whole life."""
    async with KlingService.open(settings, sandbox=sandbox) as service:
        notifier = McpNotifier(InMemorySubscriptionBus())
        service.register(notifier)
        async with service.following():
            yield Deps(service, notifier, settings)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BearerTokenMiddleware:
    """Refuses HTTP requests without `Authorization: Bearer <token>` (401)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send(
                    {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]}
                )
                await send({"type": "http.response.body", "body": b"Missing or wrong bearer token"})
                return
        await self.app(scope, receive, send)


async def serve(settings: Settings, *, sandbox: bool, transport: str, host: str, port: int) -> None:
    token = settings.mcp.http_token.get_secret_value() if settings.mcp.http_token else None
    if transport == "http" and not _is_loopback(host) and not token:
        raise KlingError(f"Refusing to listen on {host} without [mcp] http_token (KLING_MCP__HTTP_TOKEN).")
    async with open_deps(settings, sandbox=sandbox) as deps:
        server = build_server(deps)
        if sandbox:
            log.warning("kling3 MCP server on the embedded sandbox at %s: no credits are spent", deps.service.base_url)
        if transport == "stdio":
            await server.run_stdio_async()
            return
        import uvicorn

        app: Any = server.streamable_http_app(host=host)
        if token:
            app = BearerTokenMiddleware(app, token)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        log.warning("kling3 MCP server listening on http://%s:%d/mcp", host, port)
        await uvicorn.Server(config).serve()
