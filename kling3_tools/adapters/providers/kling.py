"""Kling's own API (and the gateways that mirror its format): a JWT from an access and secret key, or a plain
Bearer key; one endpoint per family; `{code, message, request_id, data}` answers with numeric codes.

Decided here where Kling's pages are silent or disagree (the Providers page says the same):
- Kling 3.0 types go to `text2video` / `image2video` with `model_name` "kling-v3"; O3 types to `omni-video`
  with "kling-v3-omni" (`image_list` frames and references, `video_list` for a reference or the video to edit).
- `duration` is sent as a string and `sound` as "on"/"off", as Kling's examples do; an edit sends neither.
- A reference prompt that names no `<<<image_N>>>` / `<<<element_N>>>` / `<<<video_1>>>` gets them appended.
- Extend (Kling's `video-extend` takes only its 1.x models' videos): an omni-video request with the finished
  video as a reference (`refer_type` "feature") and the prompt "Based on <<<video_1>>>, generate the next
  shot: …", as Kling's FAQ "How to extend a video?" says; the answer is the next shot, not the joined clip.
- Lip-sync: the `lip-sync` call (`input` with the video's URL, then `text` and `voice_id` or `audio_url`);
  its newer two-step form (identify-face, advanced-lip-sync) needs a text-to-speech call first for text.
- Motion control: `motion-control` with "kling-v3"; characters: `advanced-custom-elements` from images,
  placed with `element_list`; native multi-shot: `multi_shot` with `shot_type` "customize".
- A task is read by its id at `GET /v1/videos/{family}/{id}`, and by the caller's id (the ledger's attempt
  id, sent as `external_task_id`) at `GET /v1/videos/{family}?external_task_id=…`.
- Prices: Kling bills its API in units from resource packs; its own table could not be read from here, so the
  defaults below come from figures others cite from it, and O3's are estimated: override with `[prices]`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from ...domain.catalog import Family, Mode, Price, TaskType, get_model
from ...domain.characters import CharacterTask
from ...domain.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidPromptError,
    RateLimitError,
    TaskNotFoundError,
)
from ...domain.models import GenerateRequest
from ...domain.tasks import Task
from .base import Call, CharacterCalls, Credentials, Provider
from .kling_bodies import as_id, inline, kling3_body, lip_sync_body, motion_body, omni_body

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
TOKEN_SECONDS = 1800  # Kling's tokens last at most 30 minutes
RENEW_BEFORE_SECONDS = 300
NOT_BEFORE_SLACK_SECONDS = 5  # a server clock a little behind ours still takes the token
CLOCK_HINT = (
    " (the token is made here from the access and secret key: check both, and this machine's clock, which must"
    " be within seconds of the time)"
)

FAMILIES = {
    Mode.TEXT: "text2video",
    Mode.IMAGE: "image2video",
    Mode.MOTION: "motion-control",
    Mode.LIP_SYNC: "lip-sync",
}
OMNI = "omni-video"
ELEMENTS = "/v1/general/advanced-custom-elements"
MODEL_NAMES = {Family.KLING_3: "kling-v3", Family.O3: "kling-v3-omni"}

# Numeric codes (Kling's "common info" page) to the error tree, by their leading digits.
CODE_CLASSES: list[tuple[range, type[APIError]]] = [
    (range(1000, 1100), AuthenticationError),
    (range(1100, 1200), InsufficientCreditsError),
    (range(1200, 1300), BadRequestError),
    (range(1301, 1302), InvalidPromptError),  # content policy
    (range(1302, 1304), RateLimitError),  # rate, and the parallel-task limit
    (range(1300, 1400), BadRequestError),
    (range(5000, 6000), InternalServerError),
]
NOT_FOUND_CODES = frozenset({1203})  # "the resource does not exist"


def family_of(type_: TaskType | str) -> str:
    spec = get_model(type_)
    return OMNI if spec.family is Family.O3 else FAMILIES[spec.mode]


class Kling(Provider):
    name: ClassVar[str] = "kling"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL
    unit: ClassVar[str] = "units"
    # In units. Kling 3.0 from the figures Kling's developer pricing page gives as cited by third parties
    # (a 5 s clip: 3 units standard, 4 pro; 10 s pro with audio: 12); O3 estimated from them. Override with
    # `[prices]` from your account's billing page.
    PRICES: ClassVar[Mapping[TaskType, Price]] = {
        TaskType.PRO_TEXT_TO_VIDEO: Price(per_second=0.8, per_second_with_sound=1.2),
        TaskType.PRO_IMAGE_TO_VIDEO: Price(per_second=0.8, per_second_with_sound=1.2),
        TaskType.STD_TEXT_TO_VIDEO: Price(per_second=0.6, per_second_with_sound=0.9),
        TaskType.STD_IMAGE_TO_VIDEO: Price(per_second=0.6, per_second_with_sound=0.9),
        TaskType.O3_PRO_TEXT_TO_VIDEO: Price(per_second=1.2),
        TaskType.O3_PRO_IMAGE_TO_VIDEO: Price(per_second=1.2),
        TaskType.O3_PRO_REFERENCE_TO_VIDEO: Price(per_second=1.6),
        TaskType.O3_PRO_VIDEO_EDIT: Price(fixed=10),
        TaskType.O3_STD_TEXT_TO_VIDEO: Price(per_second=0.9),
        TaskType.O3_STD_IMAGE_TO_VIDEO: Price(per_second=0.9),
        TaskType.O3_STD_REFERENCE_TO_VIDEO: Price(per_second=1.2),
        TaskType.O3_STD_VIDEO_EDIT: Price(fixed=8),
        TaskType.O3_PRO_VIDEO_EXTEND: Price(per_second=1.6),  # billed as the reference request it is
        TaskType.O3_STD_VIDEO_EXTEND: Price(per_second=1.2),
        TaskType.PRO_MOTION_CONTROL: Price(per_second=0.8),  # per second of the motion video; estimated
        TaskType.STD_MOTION_CONTROL: Price(per_second=0.6),
        TaskType.LIP_SYNC: Price(per_second=0.2),  # per second of the video; estimated
    }
    finds_by_attempt_id: ClassVar[bool] = True
    inline_images: ClassVar[bool] = True
    keeps_characters: ClassVar[bool] = True
    _token = ""  # the last token made, and when to make the next
    _renew_at = 0.0

    def load_ahead(self) -> None:
        super().load_ahead()
        importlib.import_module("jwt")

    def authorization(self) -> str | None:
        access, secret = self.credentials.access_key, self.credentials.secret_key
        if access is not None and secret is not None and Credentials.given(access) and Credentials.given(secret):
            now = time.time()
            if now >= self._renew_at:
                import jwt  # at the first token: reading the settings does not load it

                claims = {
                    "iss": access.get_secret_value().strip(),
                    "exp": int(now) + TOKEN_SECONDS,
                    "nbf": int(now) - NOT_BEFORE_SLACK_SECONDS,
                }
                self._token = jwt.encode(claims, secret.get_secret_value().strip(), algorithm="HS256")
                self._renew_at = now + TOKEN_SECONDS - RENEW_BEFORE_SECONDS
            return f"Bearer {self._token}"
        key = self.credentials.api_key
        return f"Bearer {key.get_secret_value().strip()}" if key is not None and Credentials.given(key) else None

    def generate(self, request: GenerateRequest, *, attempt_id: str | None = None) -> Call:
        spec = request.spec
        body: dict[str, Any] = {"model_name": MODEL_NAMES[spec.family], "mode": spec.tier.value}
        if spec.mode is Mode.LIP_SYNC:
            body = lip_sync_body(request)
        elif spec.mode is Mode.MOTION:
            body |= motion_body(request)
        else:
            body |= omni_body(request) if spec.family is Family.O3 else kling3_body(request)
        body = {name: inline(value) for name, value in body.items()}
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if attempt_id:
            body["external_task_id"] = attempt_id
        if self.callback_url:
            body["callback_url"] = self.callback_url
        return Call("POST", f"/v1/videos/{family_of(spec.type)}", json=body)

    def status(self, task_id: str, type_: TaskType | str | None = None) -> list[Call]:
        families = [family_of(type_)] if type_ else [*FAMILIES.values(), OMNI]
        return [Call("GET", f"/v1/videos/{family}/{quote(task_id, safe='')}") for family in families]

    def find(self, attempt_id: str, type_: TaskType | str) -> Call | None:
        return Call("GET", f"/v1/videos/{family_of(type_)}", params={"external_task_id": attempt_id})

    def read_task(self, response: httpx.Response) -> Task:
        data = self.task_data(response)
        videos = data["task_result"].get("videos")
        return Task.model_validate(
            {
                "task_id": data["task_id"],
                "status": data["task_status"],
                "response": videos if isinstance(videos, list) else [],
                "error_message": failure(data),
                "consumed_credits": deduction(data.get("final_unit_deduction")),
            }
        )

    def task_data(self, response: httpx.Response) -> dict[str, Any]:
        """The task object of an answer (`task_id` a string, `task_status` a word, `task_result` a dict), or the
        `APIError` its error stands for."""
        try:
            body = response.json()
        except ValueError:
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        if response.status_code >= 400 or code not in (0, None):
            raise error_for(response, body, auth_hint=CLOCK_HINT if self._token else "")
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, list):  # a look-up by the caller's id may answer with a list
            data = data[0] if data else None
        if not isinstance(data, dict) or not isinstance(data.get("task_id"), str | int):
            raise APIError("The API answered without a task id.", status_code=response.status_code)
        result = data.get("task_result")
        return data | {
            "task_id": str(data["task_id"]),
            "task_status": str(data.get("task_status") or ""),
            "task_result": result if isinstance(result, dict) else {},
        }

    def character_calls(self) -> CharacterCalls:
        return KlingElements(self)


class KlingElements(CharacterCalls):
    """Characters as Kling's elements: made from a frontal image and one to three more."""

    def __init__(self, kling: Kling) -> None:
        self.kling = kling

    def create(self, name: str, description: str, images: list[str], *, attempt_id: str) -> Call:
        frontal, *others = (inline(image) for image in images)
        body: dict[str, Any] = {
            "element_name": name,
            "element_description": description or name,
            "reference_type": "image_refer",
            "element_image_list": {"frontal_image": frontal, "refer_images": [{"image_url": o} for o in others]},
            "external_task_id": attempt_id,
        }
        return Call("POST", ELEMENTS, json=body)

    def status(self, task_id: str) -> Call:
        return Call("GET", f"{ELEMENTS}/{quote(task_id, safe='')}")

    def delete(self, provider_id: str) -> Call:
        return Call("POST", "/v1/general/delete-elements", json={"element_id": as_id(provider_id)})

    def read(self, response: httpx.Response) -> CharacterTask:
        data = self.kling.task_data(response)
        elements = data["task_result"].get("elements")
        first = elements[0] if isinstance(elements, list) and elements and isinstance(elements[0], dict) else {}
        element_id = first.get("element_id")
        return CharacterTask(
            task_id=data["task_id"],
            raw_status=data["task_status"],
            provider_id=str(element_id) if isinstance(element_id, str | int) and str(element_id).isalnum() else None,
            error_message=failure(data),
        )


def failure(data: dict[str, Any]) -> str | None:
    return str(data.get("task_status_msg") or "") or None if data["task_status"].lower() == "failed" else None


def deduction(value: Any) -> int | None:
    try:
        return round(float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def error_for(response: httpx.Response, body: Any, *, auth_hint: str = "") -> APIError:
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) and isinstance(body.get("message"), str) else None
    message = message or f"HTTP {response.status_code} {response.reason_phrase}".strip()
    status = response.status_code if response.status_code >= 400 else 400
    if (isinstance(code, int) and code in NOT_FOUND_CODES) or status == 404:
        return TaskNotFoundError(message, status_code=status, code=str(code or "TASK_NOT_FOUND"))
    cls: type[APIError] = next((c for span, c in CODE_CLASSES if isinstance(code, int) and code in span), APIError)
    if cls is APIError:
        cls = (
            InternalServerError
            if status >= 500
            else {401: AuthenticationError, 429: RateLimitError}.get(status, BadRequestError)
        )
    if cls is RateLimitError:
        from ..answers import parse_retry_after

        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimitError(message, status_code=status, code=str(code), retry_after=retry_after)
    if cls is AuthenticationError:
        message += auth_hint
    return cls(message, status_code=status, code=str(code) if code is not None else None)
