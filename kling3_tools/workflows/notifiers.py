"""Where finished tasks go: one notifier per origin kind, in a registry the poller reads.

A notifier's `deliver` raises when the destination did not take the result;
the poller then retries it later with backoff. `progress` is best effort: a
status change worth showing (Discord edits its embed), never retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from typing import Any, Protocol

import httpx

from ..domain.records import Delivery, TaskRecord
from ..domain.story_record import StoryRecord
from ..version import __version__

DELIVERY_GIVE_UP_SECONDS = 24 * 3600  # a destination down for a day is given up
MAX_DELIVERY_BACKOFF = 300.0

SIGNATURE_HEADER = "X-Kling3-Signature"
EVENT_ID_HEADER = "X-Kling3-Event-Id"


class DeliveryError(Exception):
    """The destination did not accept the result; it will be retried."""


def next_delivery_at(attempts: int, finished_at: float | None, now: float) -> float | None:
    """When to try a failed delivery again (after `attempts` failures, with jittered exponential backoff), or
    None to give up: the result ended more than a day ago."""
    if now - (finished_at or now) > DELIVERY_GIVE_UP_SECONDS:
        return None
    return now + min(2.0**attempts, MAX_DELIVERY_BACKOFF) * random.uniform(0.5, 1.0)


def delivery_failed(record: TaskRecord | StoryRecord, failure: Exception, now: float) -> str:
    """The one rule for a task's or a story's failed delivery: counted, and tried again with backoff until a day
    after its end, then given up. Returns what became of it (`retrying`, `given_up`)."""
    record.delivery_attempts += 1
    record.delivery_error = str(failure) or type(failure).__name__
    record.due_at = next_delivery_at(record.delivery_attempts, record.finished_at, now)
    if record.due_at is None:
        record.delivery = Delivery.GIVEN_UP
        return "given_up"
    return "retrying"


def delivered(record: TaskRecord | StoryRecord) -> None:
    record.delivery, record.delivery_error, record.due_at = Delivery.DELIVERED, None, None


class Notifier(Protocol):
    kind: str

    async def deliver(self, record: TaskRecord) -> None: ...

    async def progress(self, record: TaskRecord) -> None: ...

    async def deliver_story(self, record: StoryRecord) -> None:
        """A story ended (its film made, or a shot failed); raises like `deliver` to be retried."""

    async def story_progress(self, record: StoryRecord) -> None:
        """A story's shots moved on (best effort, like `progress`)."""


class Notifiers:
    """The registry: origin kind -> notifier. Pollers only claim tasks whose kind is registered."""

    def __init__(self, *notifiers: Notifier) -> None:
        self._by_kind: dict[str, Notifier] = {}
        for notifier in notifiers:
            self.register(notifier)

    def register(self, notifier: Notifier) -> None:
        self._by_kind[notifier.kind] = notifier

    def kinds(self) -> list[str]:
        return sorted(self._by_kind)

    def __getitem__(self, kind: str) -> Notifier:
        return self._by_kind[kind]


class CliNotifier:
    """Nothing to push: the terminal reads the store (`kling3 tasks`, `kling3 wait`)."""

    kind = "cli"

    async def deliver(self, record: TaskRecord) -> None:
        return None

    async def progress(self, record: TaskRecord) -> None:
        return None

    async def deliver_story(self, record: StoryRecord) -> None:
        return None

    async def story_progress(self, record: StoryRecord) -> None:
        return None


def event_payload(record: TaskRecord) -> dict[str, Any]:
    """The JSON event sent for a finished task; `event_id` is stable across retries."""
    outcome = record.outcome.value if record.outcome else "running"
    return {
        "event": f"task.{outcome}",
        "event_id": f"{record.task_id}:{outcome}",
        "sent_at": time.time(),
        "task": {
            "task_id": record.task_id,
            "type": record.type,
            "status": record.status.value,
            "raw_status": record.raw_status,
            "outcome": outcome,
            "video_urls": record.video_urls,
            "local_path": record.local_path,
            "error_message": record.error_message,
            "estimated_credits": record.estimated_credits,
            "consumed_credits": record.consumed_credits,
            "submitted_at": record.submitted_at,
            "finished_at": record.finished_at,
            "request": record.request,
        },
    }


def story_payload(record: StoryRecord) -> dict[str, Any]:
    """The JSON event sent when a story ends; `event_id` is stable across retries of one ending."""
    return {
        "event": f"story.{record.state.value}",
        "event_id": f"{record.story_id}:{record.state.value}:{record.finished_at}",
        "sent_at": time.time(),
        "story": {
            "story_id": record.story_id,
            "title": record.story.title,
            "state": record.state.value,
            "note": record.note,
            "film_url": record.film_url,
            "film_path": record.film_path,
            "credits": record.credits,
            "shots": {i: shot.model_dump(mode="json", exclude={"attempt_id"}) for i, shot in record.shots.items()},
            "created_at": record.created_at,
            "finished_at": record.finished_at,
        },
    }


def sign(secret: str, body: bytes) -> str:
    """The signature header value: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """For receivers: True when `header` is the signature of `body` under `secret`."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


class WebhookNotifier:
    """POSTs the event as JSON, signed with HMAC-SHA256 in `X-Kling3-Signature`; any 2xx is delivered."""

    kind = "webhook"

    def __init__(self, http: httpx.AsyncClient, secret: str, *, timeout: float = 10.0) -> None:
        self._http = http
        self._secret = secret
        self._timeout = timeout

    async def deliver(self, record: TaskRecord) -> None:
        if record.origin.kind != "webhook":
            raise DeliveryError(f"task {record.task_id} has no webhook origin")
        await self._post(record.origin.url, event_payload(record))

    async def deliver_story(self, record: StoryRecord) -> None:
        if record.origin.kind != "webhook":
            raise DeliveryError(f"story {record.story_id} has no webhook origin")
        await self._post(record.origin.url, story_payload(record))

    async def story_progress(self, record: StoryRecord) -> None:
        return None

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"kling3-tools/{__version__}",
            SIGNATURE_HEADER: sign(self._secret, body),
            EVENT_ID_HEADER: payload["event_id"],
        }
        try:
            response = await self._http.post(url, content=body, headers=headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook unreachable: {type(exc).__name__}") from None
        if not response.is_success:
            raise DeliveryError(f"webhook answered {response.status_code}")

    async def progress(self, record: TaskRecord) -> None:
        return None
