"""The aggregator's format (the seed page): `POST /api/generate`, `GET /api/status`, a Bearer key, credits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from ...domain import catalog
from ...domain.catalog import Price, TaskType
from ...domain.models import GenerateRequest
from ...domain.tasks import Task
from .base import Call, Credentials, Provider

if TYPE_CHECKING:
    import httpx


class Kling3Api(Provider):
    name: ClassVar[str] = "kling3api"
    default_base_url: ClassVar[str] = catalog.DEFAULT_BASE_URL
    unit: ClassVar[str] = "credits"
    PRICES: ClassVar[Mapping[TaskType, Price]] = catalog.PRICES
    # The page's fields, and `source_task` (a video made here, sent as its URL).
    takes_fields: ClassVar[frozenset[str] | None] = frozenset(
        {"prompt", "negative_prompt", "duration", "aspect_ratio", "sound", "cfg_scale", "image", "end_image"}
        | {"images", "video", "keep_original_sound", "source_task"}
    )

    def authorization(self) -> str | None:
        key = self.credentials.api_key
        return f"Bearer {key.get_secret_value().strip()}" if Credentials.given(key) and key else None

    def generate(self, request: GenerateRequest, *, attempt_id: str | None = None) -> Call:
        return Call("POST", "/api/generate", json=request.to_payload())

    def status(self, task_id: str, type_: TaskType | str | None = None) -> list[Call]:
        return [Call("GET", "/api/status", params={"task_id": task_id})]

    def read_task(self, response: httpx.Response) -> Task:
        from ..answers import task_answer  # with the client, which needs it first: settings alone stay light

        return task_answer(response)
