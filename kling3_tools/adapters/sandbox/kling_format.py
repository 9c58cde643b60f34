"""The sandbox in Kling's own format, beside the page's: `POST /v1/videos/{family}`, `GET /v1/videos/{family}/{id}`
and `GET /v1/videos/{family}?external_task_id=…`, Bearer tokens (an HS256 JWT from the sandbox's access and
secret key, or its plain key as gateways take), `{code, message, request_id, data}` answers with Kling's
numeric codes. Written from Kling's documentation, not from our client, so that tests check one against the
other; a body is read into the page's shape and run by the same account, prices and faults."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ...domain import catalog
from ..providers.kling import Kling
from .kling_extras import Elements, Rejected, lip_sync_page, motion_page, multi_shot_prompt, source_seconds
from .state import Fault, SandboxState, SandboxTask

FAMILIES = ("text2video", "image2video", "omni-video", "motion-control", "lip-sync")
MODELS = {"text2video": "kling-v3", "image2video": "kling-v3", "omni-video": "kling-v3-omni"}
OWN_BODIES = {"motion-control": motion_page, "lip-sync": lip_sync_page}  # types only Kling's format has
WORDS = {"IN_PROGRESS": "processing", "SUCCESS": "succeed", "FAILED": "failed"}
# The page's codes (what the shared checks raise) as Kling's HTTP status and numeric code.
CODES = {
    "INVALID_API_KEY": (401, 1001),
    "INSUFFICIENT_CREDITS": (402, 1102),
    "RATE_LIMITED": (429, 1302),
    "TASK_NOT_FOUND": (404, 1203),
    "INTERNAL_ERROR": (500, 5000),
}
PARAMETER = (400, 1201)


class Reject(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.code, self.message, self.headers = status, code, message, headers


class Hostile(Exception):
    """An injected fault answered 200: a padded or dripping body, for either format (clients must survive it)."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault

    def response(self) -> Response:
        if self.fault.pad_bytes:
            return JSONResponse({"code": 200, "message": "x" * self.fault.pad_bytes, "data": {"task_id": "n75pad"}})
        delay = self.fault.drip_seconds or 0.5

        async def drip() -> AsyncIterator[bytes]:
            for byte in b'{"code": 200, "message": "success", "data": {"task_id": "n75drip"}}':
                await asyncio.sleep(delay)
                yield bytes([byte])

        return StreamingResponse(drip(), media_type="application/json")


class KlingFormat:
    def __init__(
        self,
        state: SandboxState,
        guard: Callable[..., Awaitable[None]],
        create: Callable[..., Awaitable[SandboxTask]],
        word_of: Callable[[SandboxTask], str],
        video_url: Callable[[Request, str], str],
    ) -> None:
        self.state, self.guard, self.create, self.word_of, self.video_url = state, guard, create, word_of, video_url
        self.calling: set[asyncio.Task[None]] = set()  # callbacks waiting for their task to end
        self.elements = Elements(self.guarded, answer, lambda status, text: error(
            Reject(status, "TASK_NOT_FOUND" if status == 404 else "INVALID_PARAMETER", text)))  # fmt: skip

    def routes(self) -> list[Route]:
        return [
            *self.elements.routes(),
            Route("/v1/videos/{family}", self.generate_or_find, methods=["POST", "GET"]),
            Route("/v1/videos/{family}/{task_id:path}", self.status, methods=["GET"]),
        ]

    async def guarded(self, request: Request, endpoint: str) -> Response | None:
        """What the guard answers instead of the endpoint (a refusal, a hostile fault), or None to go on."""
        try:
            await self.guard(request, endpoint, self.authorized)
        except Hostile as hostile:
            return hostile.response()
        except Reject as reject:
            return error(reject)
        return None

    def authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            return False
        if token == self.state.options.api_key:
            return True
        try:
            claims = jwt.decode(
                token, self.state.options.secret_key, algorithms=["HS256"], options={"require": ["exp"]}
            )
        except jwt.PyJWTError:
            return False
        return bool(claims.get("iss") == self.state.options.access_key)

    async def generate_or_find(self, request: Request) -> Response:
        family = request.path_params["family"]
        try:
            await self.guard(request, "generate" if request.method == "POST" else "status", self.authorized)
            if family not in FAMILIES:
                raise Reject(404, "TASK_NOT_FOUND", f"No endpoint /v1/videos/{family}")
            if request.method == "GET":
                found = self.state.find_external(request.query_params.get("external_task_id", ""))
                if found is None:
                    raise Reject(404, "TASK_NOT_FOUND", "No task with that external_task_id")
                return answer(self.task_data(request, found))
            try:
                body = await request.json()
            except ValueError:
                raise Reject(400, "INVALID_PARAMETER", "The body is not valid JSON") from None
            if not isinstance(body, dict) or body.get("model_name") != MODELS.get(family, body.get("model_name")):
                raise Reject(400, "INVALID_PARAMETER", f"model_name must be {MODELS[family]} on /v1/videos/{family}")
            external = str(body.get("external_task_id") or "")
            if external and self.state.find_external(external) is not None:
                raise Reject(400, "INVALID_PARAMETER", "external_task_id is already used on this account")
            if family in OWN_BODIES:
                page = OWN_BODIES[family](body) | {"duration": source_seconds(self.state, body_video(body))}
                spec = catalog.get_model(page["type"])
                task = await self.create(
                    page, external, (spec, Kling.PRICES[spec.type].credits(page["duration"], False))
                )
            else:
                task = await self.create(page_body(family, body), external)
        except Hostile as hostile:
            return hostile.response()
        except Reject as reject:
            return error(reject)
        except Rejected as exc:
            return error(Reject(400, "INVALID_PARAMETER", str(exc)))
        except (ValueError, TypeError) as exc:
            return error(Reject(400, "INVALID_PARAMETER", f"invalid field: {exc}"))
        if isinstance(url := body.get("callback_url"), str) and url.startswith(("http://", "https://")):
            calling = asyncio.create_task(self.call_back(url, request, task))
            self.calling.add(calling)
            calling.add_done_callback(self.calling.discard)
        return answer({"task_id": task.task_id, "task_status": "submitted", "task_info": task_info(task)})

    async def call_back(self, url: str, request: Request, task: SandboxTask) -> None:
        """POST the task object to `callback_url` once it has ended, as Kling does (once here: Kling documents
        no retries)."""
        await asyncio.sleep(max(0.0, task.finishes_at - time.time()))
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=10) as http:
                await http.post(url, json=self.task_data(request, task))
                self.state.requests["callback"] += 1

    async def status(self, request: Request) -> Response:
        try:
            await self.guard(request, "status", self.authorized)
            task = self.state.find(request.path_params["task_id"])
            if task is None or family_of(task.type) != request.path_params["family"]:
                raise Reject(404, "TASK_NOT_FOUND", "The task does not exist")
        except Hostile as hostile:
            return hostile.response()
        except Reject as reject:
            return error(reject)
        return answer(self.task_data(request, task))

    def task_data(self, request: Request, task: SandboxTask) -> dict[str, Any]:
        word = self.word_of(task)
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": WORDS[word],
            "task_info": task_info(task),
            "created_at": int(task.created_at * 1000),
            "updated_at": int(time.time() * 1000),
        }
        if word == "FAILED":
            data["task_status_msg"] = task.reason or "Sandbox: simulated generation failure"
        if word == "SUCCESS":
            duration = task.request.get("duration") or catalog.DEFAULT_DURATION
            videos = [
                {"id": f"v-{task.task_id}", "url": self.video_url(request, task.task_id), "duration": str(duration)}
            ]
            data |= {"task_result": {"videos": videos}, "final_unit_deduction": str(units(task))}
        return data


def family_of(type_: catalog.TaskType) -> str:
    spec = catalog.get_model(type_)
    if spec.mode in (catalog.Mode.MOTION, catalog.Mode.LIP_SYNC):
        return spec.mode.value
    return "omni-video" if spec.family is catalog.Family.O3 else f"{spec.mode.value.split('-')[0]}2video"


def body_video(body: dict[str, Any]) -> Any:
    given = body.get("input")
    return given.get("video_url") if isinstance(given, dict) else body.get("video_url")


def page_body(family: str, body: dict[str, Any]) -> dict[str, Any]:
    """A Kling body in the page's shape, for the shared checks and prices."""
    mode = body.get("mode", "std")
    if mode not in ("std", "pro"):
        raise ValueError("mode must be std or pro")
    page: dict[str, Any] = {"prompt": body.get("prompt"), "aspect_ratio": body.get("aspect_ratio", "16:9")}
    if "duration" in body:
        page["duration"] = int(body["duration"])
    if "sound" in body:
        page["sound"] = body["sound"] == "on"
    for field in ("negative_prompt", "cfg_scale"):
        if field in body:
            page[field] = body[field]
    if body.get("multi_shot"):
        page["prompt"] = multi_shot_prompt(body)
    if family != "omni-video":
        kind = "image" if family == "image2video" else "text"
        page |= {"type": f"{mode}-{kind}-to-video", "image": body.get("image")}
        if body.get("image_tail"):
            page[catalog.END_FRAME_WIRE_FIELD] = body["image_tail"]
        return {k: v for k, v in page.items() if v is not None}
    images, videos = body.get("image_list") or [], body.get("video_list") or []
    frames = {image.get("type"): image.get("image_url") for image in images if image.get("type")}
    if any(video.get("refer_type") == "base" for video in videos):
        page.pop("duration", None)
        page.pop("sound", None)
        edited = videos[0]
        page |= {"type": f"o3-{mode}-video-edit", "video": edited.get("video_url")}
        page["keep_original_sound"] = edited.get("keep_original_sound") == "yes"
    elif "first_frame" in frames:
        page |= {"type": f"o3-{mode}-image-to-video", "image": frames["first_frame"]}
        if frames.get("end_frame"):
            page[catalog.END_FRAME_WIRE_FIELD] = frames["end_frame"]
    elif images or videos:
        page |= {"type": f"o3-{mode}-reference-to-video", "images": [image["image_url"] for image in images]}
        if videos:
            page["video"] = videos[0].get("video_url")
    else:
        page["type"] = f"o3-{mode}-text-to-video"
    return page


def units(task: SandboxTask) -> int:
    """What Kling deducts for the task, in its units (the account's balance is kept in the page's credits)."""
    duration = task.request.get("duration") or catalog.DEFAULT_DURATION
    sound = task.request.get("sound", True) is not False and "sound" in catalog.get_model(task.type).accepted_fields
    return Kling.PRICES[task.type].credits(duration, sound)


def task_info(task: SandboxTask) -> dict[str, str]:
    return {"external_task_id": task.external_task_id} if task.external_task_id else {}


def answer(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"code": 0, "message": "SUCCEED", "request_id": secrets.token_hex(8), "data": data})


def error(reject: Reject) -> JSONResponse:
    status, code = CODES.get(reject.code, PARAMETER)
    body = {"code": code, "message": reject.message, "request_id": secrets.token_hex(8)}
    return JSONResponse(
        body, status_code=status if reject.status < 500 or status >= 500 else reject.status, headers=reject.headers
    )
