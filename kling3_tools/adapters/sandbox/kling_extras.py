"""Kling's calls beyond text, image and omni video, in the sandbox: motion control and lip-sync (read into the
page's shape, then run by the same account) and elements (reusable characters, made at once). Checked as Kling's
pages describe them, not as our client writes them."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...domain import catalog
from .state import SandboxState

ELEMENTS = "/v1/general/advanced-custom-elements"
MEDIA = re.compile(r"/media/(?P<task_id>[^/?]+)\.mp4")


class Rejected(ValueError):
    """A body Kling would refuse with a parameter error."""


def motion_page(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("model_name") != "kling-v3":
        raise Rejected("model_name must be kling-v3 (or kling-v2-6) on /v1/videos/motion-control")
    if body.get("mode") not in ("std", "pro"):
        raise Rejected("mode must be std or pro")
    if not body.get("image_url") or not body.get("video_url"):
        raise Rejected("image_url and video_url are required")
    if body.get("character_orientation") not in ("image", "video"):
        raise Rejected("character_orientation must be image or video")
    page = {"type": f"{body['mode']}-motion-control", "image": body["image_url"], "video": body["video_url"]}
    return page | ({"prompt": body["prompt"]} if body.get("prompt") else {})


def lip_sync_page(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input")
    if not isinstance(given, dict) or not (given.get("video_url") or given.get("video_id")):
        raise Rejected("input.video_url (or input.video_id) is required")
    page: dict[str, Any] = {"type": "lip-sync", "video": given.get("video_url")}
    if given.get("mode") == "text2video":
        text = given.get("text")
        if not isinstance(text, str) or not 0 < len(text) <= catalog.MAX_SPOKEN_CHARS or not given.get("voice_id"):
            raise Rejected(f"text2video needs text (1-{catalog.MAX_SPOKEN_CHARS} characters) and voice_id")
        return page | {"text": text}
    if given.get("mode") == "audio2video":
        if given.get("audio_type") != "url" or not str(given.get("audio_url", "")).startswith(("http://", "https://")):
            raise Rejected("audio2video needs audio_type url and an audio_url")
        return page
    raise Rejected("input.mode must be text2video or audio2video")


def multi_shot_prompt(body: dict[str, Any]) -> str:
    """The shots of a multi-shot body, checked as Kling documents them (1-6 shots of at least 1 s each, their
    seconds the video's), as one prompt for the page's checks."""
    shots = body.get("multi_prompt")
    if body.get("shot_type") != "customize" or not isinstance(shots, list) or not 1 <= len(shots) <= 6:
        raise Rejected("multi_shot with shot_type customize needs multi_prompt: 1-6 shots")
    try:
        seconds = [int(shot["duration"]) for shot in shots]
        prompts = [str(shot["prompt"]) for shot in shots]
    except (KeyError, TypeError, ValueError):
        raise Rejected("each shot of multi_prompt needs index, prompt and duration") from None
    if min(seconds) < 1 or any(not 0 < len(p) <= 512 for p in prompts):
        raise Rejected("each shot lasts at least 1 s and has a prompt of 1-512 characters")
    if sum(seconds) != int(body.get("duration", catalog.DEFAULT_DURATION)):
        raise Rejected("the shots' durations must add up to duration")
    return " / ".join(prompts)


def source_seconds(state: SandboxState, url: Any) -> int:
    """How long a source video is: one of the sandbox's own by its task, else the default length."""
    match = MEDIA.search(str(url or ""))
    task = state.find(match["task_id"]) if match else None
    seconds = task.request.get("duration") if task is not None else None
    return seconds if isinstance(seconds, int) else catalog.DEFAULT_DURATION


class Elements:
    """Characters made from images: the task ends at once with a numeric element id."""

    def __init__(
        self,
        guard: Callable[[Request, str], Awaitable[Response | None]],
        answer: Callable[[dict[str, Any]], Response],
        error: Callable[[int, str], Response],
    ) -> None:
        self.guard, self.answer, self.error = guard, answer, error  # `guard`: a refusal's answer, or None
        self.made: dict[str, dict[str, Any]] = {}  # task id -> its element

    def routes(self) -> list[Route]:
        return [
            Route(ELEMENTS, self.create, methods=["POST"]),
            Route(ELEMENTS + "/{task_id:path}", self.status, methods=["GET"]),
            Route("/v1/general/delete-elements", self.delete, methods=["POST"]),
        ]

    async def read(self, request: Request) -> dict[str, Any] | Response:
        """The JSON object of a call that passed the guard, or what is answered instead."""
        if refused := await self.guard(request, "character"):
            return refused
        try:
            body = await request.json()
        except ValueError:
            body = None
        return body if isinstance(body, dict) else self.error(400, "The body is not a JSON object")

    async def create(self, request: Request) -> Response:
        body = await self.read(request)
        if isinstance(body, Response):
            return body
        images, name = body.get("element_image_list"), body.get("element_name")
        if not isinstance(name, str) or not 0 < len(name) <= 20:
            return self.error(400, "element_name must be 1-20 characters")
        if not isinstance(images, dict) or not images.get("frontal_image"):
            return self.error(400, "element_image_list.frontal_image is required")
        if not isinstance(images.get("refer_images"), list) or not 1 <= len(images["refer_images"]) <= 3:
            return self.error(400, "element_image_list.refer_images takes 1-3 images")
        task_id = str(secrets.randbelow(10**18))
        self.made[task_id] = {"element_id": secrets.randbelow(10**15), "element_name": name}
        return self.answer({"task_id": task_id, "task_status": "submitted"})

    async def status(self, request: Request) -> Response:
        if refused := await self.guard(request, "status"):
            return refused
        element = self.made.get(request.path_params["task_id"])
        if element is None:
            return self.error(404, "The task does not exist")
        task = {"task_id": request.path_params["task_id"], "task_status": "succeed"}
        return self.answer(task | {"task_result": {"elements": [element]}})

    async def delete(self, request: Request) -> Response:
        body = await self.read(request)
        if isinstance(body, Response):
            return body
        element_id = body.get("element_id")
        gone = [task for task, element in self.made.items() if element["element_id"] == element_id]
        for task in gone:
            del self.made[task]
        return self.answer({"task_id": str(element_id), "task_status": "succeed"})
