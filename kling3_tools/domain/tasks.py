"""What the API says about a task: its status word mapped onto four states, and the task as a model that keeps
what a real server may add (unknown fields are kept, unknown status words count as running)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TaskStatus(StrEnum):
    """The four states every status word of the API is mapped to."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


# The page shows IN_PROGRESS and SUCCESS; the rest are words that similar APIs
# send. Anything else counts as running, so an unknown word never ends a wait.
_STATUS_WORDS: dict[TaskStatus, frozenset[str]] = {
    TaskStatus.QUEUED: frozenset({"PENDING", "QUEUED", "QUEUING", "SUBMITTED", "CREATED", "WAITING"}),
    TaskStatus.RUNNING: frozenset({"IN_PROGRESS", "PROCESSING", "RUNNING", "GENERATING", "STARTED"}),
    TaskStatus.SUCCEEDED: frozenset(
        {"SUCCESS", "SUCCEED", "SUCCEEDED", "SUCCESSFUL", "COMPLETED", "COMPLETE", "DONE", "FINISHED"}
    ),
    TaskStatus.FAILED: frozenset(
        {"FAILED", "FAILURE", "FAIL", "ERROR", "EXPIRED", "CANCELLED", "CANCELED", "TIMEOUT", "TIMED_OUT", "REJECTED"}
    ),
}


def normalise_status(word: str | None) -> TaskStatus:
    """Map any status word of the API onto a `TaskStatus`."""
    key = (word or "").strip().upper().replace("-", "_").replace(" ", "_")
    for status, words in _STATUS_WORDS.items():
        if key in words:
            return status
    return TaskStatus.RUNNING


class Task(BaseModel):
    """One task as the API describes it (`data` of generate and status answers)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    task_id: str
    raw_status: str = Field(default="", alias="status")
    consumed_credits: int | None = None
    created_at: datetime | None = None
    type: str | None = None
    request: dict[str, Any] | None = None
    video_urls: list[str] = Field(default_factory=list, alias="response")
    error_message: str | None = None

    @field_validator("consumed_credits", mode="before")
    @classmethod
    def _no_negative_credits(cls, value: Any) -> Any:
        """A negative figure is not a charge we can believe: treat it as not given."""
        return None if isinstance(value, int | float) and value < 0 else value

    @field_validator("video_urls", mode="before")
    @classmethod
    def _urls_from_any_shape(cls, value: Any) -> list[str]:
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        urls = []
        for item in items:
            if isinstance(item, str):
                urls.append(item)
            elif isinstance(item, dict) and isinstance(item.get("url"), str):
                urls.append(item["url"])
        return urls

    @field_validator("raw_status", mode="before")
    @classmethod
    def _status_text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @property
    def status(self) -> TaskStatus:
        return normalise_status(self.raw_status)

    @property
    def video_url(self) -> str | None:
        return self.video_urls[0] if self.video_urls else None
