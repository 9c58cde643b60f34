"""A local server that keeps the API page's contract, for demos and tests.

Same paths, envelope, Bearer auth, validation and error codes; credits are
charged from a balance at the catalog's prices; ids start `n75` (Kling 3.0) or
`n71` (O3); tasks move IN_PROGRESS -> SUCCESS (or FAILED, refunded) and their
`response` holds a URL this server serves: a small, real, playable MP4.

Error bodies are `{"code": <http status>, "message": ..., "error_code": <CODE>,
"data": null}`: the page names codes but not the body, and the client reads
this shape among others. Codes beyond the page: TASK_NOT_FOUND (404) and
INVALID_PARAMETER (400, a field other than those the page gives a code for).

`/sandbox/*` endpoints (no auth) let tests and demos read counters and turn
the fault knobs while the server runs.
"""

from __future__ import annotations

import asyncio
import binascii
import math
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ...domain import catalog
from ..assets import checks
from .kling_format import Hostile, KlingFormat, Reject
from .options import SandboxOptions
from .state import Fault, SandboxState, SandboxTask

FETCH_SECONDS = 10.0  # the most the sandbox spends fetching one input, however slowly it drips
SAMPLE_VIDEO = resources.files(__package__).joinpath("sample.mp4").read_bytes()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"code": status, "message": message, "error_code": code, "data": None}
    return JSONResponse(body, status_code=status, headers=headers)


def _ok(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"code": 200, "message": "success", "data": data})


def _validate(body: Any) -> tuple[catalog.ModelSpec, int]:
    """The spec and the price of a generate body, or `Reject` with the page's code."""
    if not isinstance(body, dict):
        raise Reject(400, "INVALID_PARAMETER", "The body must be a JSON object")
    try:
        spec = catalog.get_model(body.get("type", ""))
    except KeyError:
        spec = None
    if spec is None or spec.price is None:  # a type of Kling's own API only
        raise Reject(400, "INVALID_TYPE", f"Unsupported task type: {body.get('type')!r}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > catalog.MAX_PROMPT_CHARS:
        raise Reject(400, "INVALID_PROMPT", "The prompt is invalid or empty")
    duration = body.get("duration", catalog.DEFAULT_DURATION)
    if spec.has_duration and (
        not isinstance(duration, int)
        or isinstance(duration, bool)
        or not catalog.MIN_DURATION <= duration <= catalog.MAX_DURATION
    ):
        raise Reject(400, "INVALID_DURATION", "Duration out of supported range")
    if spec.mode is catalog.Mode.IMAGE and not body.get("image"):
        raise Reject(400, "MISSING_IMAGE", "Image is required for image-to-video tasks")
    if spec.mode is catalog.Mode.EDIT and not body.get("video"):
        raise Reject(400, "MISSING_VIDEO", "Video is required for video-edit tasks")
    if body.get("aspect_ratio", catalog.DEFAULT_ASPECT_RATIO) not in set(catalog.AspectRatio):
        raise Reject(400, "INVALID_PARAMETER", "aspect_ratio must be 16:9, 9:16 or 1:1")
    images = body.get("images") or []
    if not isinstance(images, list) or len(images) > catalog.MAX_REFERENCE_IMAGES:
        raise Reject(400, "INVALID_PARAMETER", f"images must be a list of at most {catalog.MAX_REFERENCE_IMAGES} URLs")
    cfg_scale = body.get("cfg_scale", catalog.DEFAULT_CFG_SCALE)
    if not isinstance(cfg_scale, int | float) or not 0 <= cfg_scale <= 1:
        raise Reject(400, "INVALID_PARAMETER", "cfg_scale must be between 0 and 1")
    sound = body.get("sound", True) is not False
    return spec, spec.price.credits(duration if spec.has_duration else 0, sound)


def create_app(options: SandboxOptions | None = None, *, state_path: Path | None = None) -> Starlette:
    """The sandbox as an ASGI app; `app.state.sandbox` is its `SandboxState` (kept in `state_path` if given)."""
    state = SandboxState(options or SandboxOptions(), path=state_path)

    def holds_the_key(request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {state.options.api_key}"

    async def guard(request: Request, endpoint: str, authorized: Callable[[Request], bool] = holds_the_key) -> None:
        """Auth, rate limit, injected faults: what every API request passes first."""
        state.requests[endpoint] += 1
        if not authorized(request):
            raise Reject(401, "INVALID_API_KEY", "API key is missing or invalid")
        wait = state.take_token()
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait)))
            raise Reject(429, "RATE_LIMITED", "Too many requests, please slow down", {"Retry-After": retry_after})
        fault = state.next_fault(endpoint)
        if fault is not None and fault.status < 400:
            raise Hostile(fault)
        if fault is not None:
            after = fault.retry_after
            headers = (
                {"Retry-After": f"{after:g}" if isinstance(after, float) else after} if after is not None else None
            )
            code = {429: "RATE_LIMITED", 402: "INSUFFICIENT_CREDITS", 401: "INVALID_API_KEY"}.get(
                fault.status, "INTERNAL_ERROR" if fault.status >= 500 else "INVALID_PARAMETER"
            )
            raise Reject(fault.status, fault.code or code, fault.message or f"Injected fault {fault.status}", headers)
        if state.rng.random() < state.options.error_rate:
            raise Reject(500, "INTERNAL_ERROR", "Server error, please try again later")

    def _reject(reject: Reject) -> Response:
        state.rejections[reject.code] += 1
        return _error(reject.status, reject.code, reject.message, reject.headers)

    async def generate(request: Request) -> Response:
        try:
            await guard(request, "generate")
        except Hostile as hostile:
            return hostile.response()
        except Reject as reject:
            return _reject(reject)
        try:
            try:
                body = await request.json()
            except ValueError:
                raise Reject(400, "INVALID_PARAMETER", "The body is not valid JSON") from None
            task = await create(body)
        except Reject as reject:
            return _reject(reject)
        return _ok({"task_id": task.task_id, "status": "IN_PROGRESS", "consumed_credits": task.credits})

    async def create(
        body: Any, external_task_id: str = "", priced: tuple[catalog.ModelSpec, int] | None = None
    ) -> SandboxTask:
        """A task for a generate body in the page's shape (checked, its inputs fetched, charged), or `Reject`;
        `priced`: a body of Kling's own types, checked and priced by its format."""
        spec, credits = priced or _validate(body)
        unfetched = await unreachable_input(body) if state.options.fetch_inputs else None
        spread = state.options.finish_spread
        finish = state.options.finish_seconds * state.rng.uniform(1 - spread, 1 + spread)
        template = state.options.task_id_template
        now = time.time()
        task_id = template.format(n=state.task_count()) if template else spec.task_id_prefix + secrets.token_hex(6)
        task = SandboxTask(
            task_id=task_id,
            type=spec.type,
            request=body,
            credits=credits,
            created_at=now,
            finishes_at=now + finish,
            fails=unfetched is not None or state.rng.random() < state.options.failure_rate,
            reason=unfetched or "",
            external_task_id=external_task_id,
        )
        if not state.charge(task):
            raise Reject(402, "INSUFFICIENT_CREDITS", "Not enough credits for this operation")
        if state.options.generate_delay:
            await asyncio.sleep(state.options.generate_delay)
        return task

    def word_of(task: SandboxTask) -> str:
        """The task's status word now; a failed task's credits go back, once."""
        word = task.status_word(time.time())
        if word == "FAILED" and task.credits:
            state.refund(task)
        return word

    async def status(request: Request) -> Response:
        task_id = request.query_params.get("task_id", "")
        state.in_flight_status[task_id] += 1
        state.max_concurrent_polls = max(state.max_concurrent_polls, state.in_flight_status[task_id])
        try:
            await guard(request, "status")
            task = state.find(task_id)
            if task is None:
                raise Reject(404, "TASK_NOT_FOUND", f"No task with id {task_id!r}")
            if state.options.status_delay:
                await asyncio.sleep(state.options.status_delay)
        except Hostile as hostile:
            return hostile.response()
        except Reject as reject:
            return _reject(reject)
        finally:
            state.in_flight_status[task_id] -= 1
        word = word_of(task)
        return _ok(
            {
                "task_id": task.task_id,
                "status": word,
                "consumed_credits": task.credits,
                "created_at": datetime.fromtimestamp(task.created_at, UTC).isoformat().replace("+00:00", "Z"),
                "request": task.request,
                "response": [video_url(request, task.task_id)] if word == "SUCCESS" else [],
                "error_message": (task.reason or "Sandbox: simulated generation failure") if word == "FAILED" else None,
                "type": task.type.value,
            }
        )

    async def unreachable_input(body: dict[str, Any]) -> str | None:
        """Why one of the request's input URLs cannot be used, or None: fetched as the API does, each must
        answer 200 with an image (a video for `video`)."""
        inputs = [(name, body.get(name)) for name in ("image", catalog.END_FRAME_WIRE_FIELD, "video")]
        inputs += [(f"images[{i}]", url) for i, url in enumerate(body.get("images") or [])]
        inputs = [(label, url) for label, url in inputs if url]
        if not inputs:
            return None  # a text-to-video request: no client to build (that alone costs milliseconds)
        async with httpx.AsyncClient(timeout=10, follow_redirects=True, max_redirects=5) as http:
            for label, url in inputs:
                kind = "video" if label == "video" else "image"
                if not str(url).startswith(("http://", "https://")):  # Kling's format: an image inline, base64
                    found = checks.sniff(binascii.a2b_base64(str(url)[:64]))  # 48 bytes: past any magic number
                    if found is None or not found.startswith("image"):
                        return f"`{label}` is neither a URL nor an image in base64"
                    continue
                try:
                    async with asyncio.timeout(FETCH_SECONDS), http.stream("GET", str(url)) as response:
                        if response.status_code != 200:
                            return f"Could not fetch `{label}` ({url}): HTTP {response.status_code}"
                        head = b""
                        async for chunk in response.aiter_bytes():
                            head += chunk
                            if len(head) >= checks.SNIFF_BYTES:
                                break
                except (httpx.HTTPError, TimeoutError) as exc:
                    return f"Could not fetch `{label}` ({url}): {type(exc).__name__}"
                found = checks.sniff(head)
                if found is None or not found.startswith(kind):
                    return f"`{label}` ({url}) is not {'a video' if kind == 'video' else 'an image'}"
        return None

    async def upload(request: Request) -> Response:
        """Keep a file for a later generate to fetch (what `[storage]` is for with the real API)."""
        if request.headers.get("authorization", "") != f"Bearer {state.options.api_key}":
            return _error(401, "INVALID_API_KEY", "API key is missing or invalid")
        suffix = request.headers.get("x-suffix", "")
        types = {ending: content_type for content_type, ending in checks.SUFFIXES.items()}
        if suffix not in types:
            return _error(400, "INVALID_PARAMETER", "Unsupported file type")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > checks.MAX_VIDEO_BYTES:
                return _error(413, "INVALID_PARAMETER", "The upload is too large")
        key = secrets.token_urlsafe(18) + suffix
        state.keep_upload(key, types[suffix], bytes(data))
        state.requests["upload"] += 1
        return JSONResponse({"key": key})

    async def uploaded(request: Request) -> Response:
        found = state.uploads.get(request.path_params["key"])
        if found is None:
            return Response(status_code=404)
        content_type, data = found
        return Response(data, media_type=content_type)

    def video_url(request: Request, task_id: str) -> str:
        if state.options.video_url_template:
            return state.options.video_url_template.format(task_id=task_id)
        return f"{str(request.base_url).rstrip('/')}/media/{quote(task_id, safe='')}.mp4"

    async def media(request: Request) -> Response:
        task, now = state.find(request.path_params["task_id"]), time.time()
        if task is None or task.status_word(now) != "SUCCESS":
            return Response(status_code=404)
        expire = state.options.media_expire_seconds
        if expire and now > task.finishes_at + expire:
            return Response(status_code=404)
        state.requests["media"] += 1
        answer, hop = state.options.video_answer, int(request.query_params.get("hop", "0"))
        if answer == "redirect_loop" or (answer == "redirect" and hop == 0):
            return RedirectResponse(f"{request.url.path}?hop={hop + 1}", status_code=302)
        if answer == "empty":
            return Response(b"", media_type="video/mp4")
        if answer == "html":
            return Response("<html><body>Not a video</body></html>", media_type="text/html")
        if answer == "huge":
            chunk, chunks = b"\0" * 65536, int(state.options.huge_video_mb * 16)
            return StreamingResponse(iter([chunk] * chunks), media_type="video/mp4")
        return Response(SAMPLE_VIDEO, media_type="video/mp4")

    async def read_stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def list_tasks(request: Request) -> Response:
        """Every task with the wall-clock time it finishes (or finished) at."""
        return JSONResponse(
            {
                task.task_id: {"finishes_at": task.finishes_at, "fails": task.fails, "type": task.type}
                for task in state.tasks.values()
            }
        )

    async def set_options(request: Request) -> Response:
        update = await request.json()
        state.options = type(state.options).model_validate({**state.options.model_dump(), **update})
        if "starting_balance" in update:
            state.reset_balance()
        return JSONResponse(state.options.model_dump())

    async def add_fault(request: Request) -> Response:
        state.faults.append(Fault.model_validate(await request.json()))
        return JSONResponse({"queued": len(state.faults)})

    kling = KlingFormat(state, guard, create, word_of, video_url)
    app = Starlette(
        routes=[
            *kling.routes(),
            Route("/api/generate", generate, methods=["POST"]),
            Route("/api/status", status, methods=["GET"]),
            Route("/media/{task_id:path}.mp4", media, methods=["GET"]),
            Route("/sandbox/uploads", upload, methods=["POST"]),
            Route("/uploads/{key}", uploaded, methods=["GET"]),
            Route("/sandbox/stats", read_stats, methods=["GET"]),
            Route("/sandbox/tasks", list_tasks, methods=["GET"]),
            Route("/sandbox/options", set_options, methods=["POST"]),
            Route("/sandbox/faults", add_fault, methods=["POST"]),
        ]
    )
    app.state.sandbox = state
    return app
