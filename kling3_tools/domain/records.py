"""What the store keeps about a task, and where its result must go (its origin)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from .models import GenerateRequest
from .tasks import Task, TaskStatus


class OriginBase(BaseModel):
    # A story's shot: its story takes the result, not the origin's notifier. Left out when None.
    story_id: str | None = Field(default=None, exclude_if=lambda story_id: story_id is None)


class CliOrigin(OriginBase):
    """Submitted from the terminal: nothing to push, `kling3 tasks` shows it."""

    kind: Literal["cli"] = "cli"


class WebhookOrigin(OriginBase):
    """POST a signed JSON event to `url` when the task ends."""

    kind: Literal["webhook"] = "webhook"
    url: str

    @field_validator("url")
    @classmethod
    def _deliverable(cls, url: str) -> str:
        """Checked before anything is spent: a result that can never be delivered is not worth paying for."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url[:200]!r} is not an http(s) URL with a host")
        return url


class McpOrigin(OriginBase):
    """Submitted by an MCP client; `session` names the server session that asked."""

    kind: Literal["mcp"] = "mcp"
    session: str
    client_name: str | None = None
    owner: str | None = None  # over HTTP, the client identity that may see it (None: every client)
    # The owner as a number, for the ledger's per-person scopes (as a Discord member's id is). Left out when None.
    user_id: int | None = Field(default=None, exclude_if=lambda user_id: user_id is None)


class DiscordOrigin(OriginBase):
    """Submitted with a slash command: post back to this channel, mentioning this user."""

    kind: Literal["discord"] = "discord"
    guild_id: int | None
    channel_id: int
    message_id: int | None = None
    user_id: int


AnyOrigin = CliOrigin | WebhookOrigin | McpOrigin | DiscordOrigin
Origin = Annotated[AnyOrigin, Field(discriminator="kind")]
LOCAL_OWNER = "local"  # the machine's user (the CLI, Python, an MCP client over stdio): sees every task


def signed_in_identity(issuer: str, subject: str) -> str:
    """A person signed in over OAuth as MCP identities go: their issuer and subject, hashed."""
    return "oauth-" + hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:24]


def person_number(identity: str) -> int:
    """A caller identity as the ledger counts people: a stable number below 2**60."""
    return int(hashlib.sha256(identity.encode()).hexdigest()[:15], 16)


def owner_of(origin: AnyOrigin) -> str:
    """Who a task, a story or a character belongs to: a Discord member, an MCP client identity, or the local user."""
    if isinstance(origin, DiscordOrigin):
        return f"discord:{origin.user_id}"
    return mcp_owner(origin.owner) if isinstance(origin, McpOrigin) else LOCAL_OWNER


def mcp_owner(identity: str | None) -> str:
    """The owner an MCP client identity stands for (None, over stdio or with `share_tasks`: the local user)."""
    return f"mcp:{identity}" if identity else LOCAL_OWNER


def may_use(owner: str, record: TaskRecord) -> bool:
    """Whether `owner` may build on a task (extend it, lip-sync it): their own, or anything for the local user."""
    return owner == LOCAL_OWNER or owner_of(record.origin) == owner


class Outcome(StrEnum):
    """Why tracking ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class Delivery(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    GIVEN_UP = "given_up"


class TaskRecord(BaseModel):
    """One tracked task: what was asked, what the API last said, and where the result goes."""

    task_id: str
    api_url: str
    type: str
    duration: int | None
    request: dict[str, Any]
    estimated_credits: int
    consumed_credits: int | None = None
    submitted_at: float = Field(default_factory=time.time)
    status: TaskStatus = TaskStatus.RUNNING
    raw_status: str = ""
    outcome: Outcome | None = None
    finished_at: float | None = None
    video_urls: list[str] = Field(default_factory=list)
    error_message: str | None = None
    local_path: str | None = None
    archive_key: str | None = None  # the copy in [storage], when archive_videos is on
    archived_url: str | None = None  # a URL of that copy (signed ones expire: `Videos.lasting_url`)
    due_at: float | None = None
    poll_count: int = 0
    origin: Origin = Field(default_factory=CliOrigin)
    delivery: Delivery = Delivery.PENDING
    delivery_attempts: int = 0
    delivery_error: str | None = None

    @classmethod
    def submitted(
        cls,
        task: Task,
        request: GenerateRequest,
        *,
        api_url: str,
        origin: CliOrigin | WebhookOrigin | McpOrigin | DiscordOrigin,
        estimated_credits: int | None = None,
    ) -> TaskRecord:
        return cls(
            task_id=task.task_id,
            api_url=api_url,
            type=request.type.value,
            duration=request.effective_duration,
            request=request.recorded(),
            estimated_credits=request.estimated_credits() if estimated_credits is None else estimated_credits,
            consumed_credits=task.consumed_credits,
            status=task.status,
            raw_status=task.raw_status,
            origin=origin,
        )

    @property
    def source_task(self) -> str | None:
        """The task whose video this one was made from (an extend, a lip-sync, an edit of a video made here)."""
        source = self.request.get("source_task")
        return source if isinstance(source, str) else None

    @property
    def video_url(self) -> str | None:
        """The video to hand out: the archived copy when there is one (it outlives the API's)."""
        return self.archived_url or (self.video_urls[0] if self.video_urls else None)

    def to_task(self) -> Task:
        """The last known API view of this task."""
        return Task(
            task_id=self.task_id,
            status=self.raw_status,
            consumed_credits=self.consumed_credits,
            type=self.type,
            request=self.request,
            response=self.video_urls,
            error_message=self.error_message,
        )

    @property
    def is_tracking(self) -> bool:
        return self.outcome is None

    @property
    def display_status(self) -> str:
        """What to show a person: how tracking ended, else what the API last said (queued, running)."""
        return self.outcome.value if self.outcome else self.status.value

    def apply(self, task: Task, now: float) -> bool:
        """Take in what the API said; True when the status word changed."""
        changed = task.raw_status != self.raw_status
        self.status = task.status
        self.raw_status = task.raw_status
        if task.consumed_credits is not None:
            self.consumed_credits = task.consumed_credits
        if task.video_urls:
            self.video_urls = task.video_urls
        if task.error_message:
            self.error_message = task.error_message
        if task.status.is_terminal:
            self.finish(Outcome.SUCCEEDED if task.status is TaskStatus.SUCCEEDED else Outcome.FAILED, now)
        return changed

    def finish(self, outcome: Outcome, now: float) -> None:
        self.outcome = outcome
        self.finished_at = now
        self.due_at = now  # due for delivery at once


@dataclass(frozen=True, slots=True)
class Checked:
    """What `KlingService.status` learned: the API's answer, and the record it saved (None when untracked)."""

    task: Task
    record: TaskRecord | None
