"""What the assistant reads: the tools' typed results, and the sentences that tell it what to do next."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..domain import catalog
from ..domain.records import Outcome, TaskRecord
from ..domain.story_record import StoryRecord, StoryState
from ..domain.tasks import Task
from ..service import KlingService

TASK_URI = "kling://tasks/{task_id}"
STORY_URI = "kling://stories/{story_id}"
MODELS_URI = "kling://models"


def task_uri(task_id: str) -> str:
    return TASK_URI.format(task_id=task_id)


def story_uri(story_id: str) -> str:
    return STORY_URI.format(story_id=story_id)


class VideoTask(BaseModel):
    """A video task as the assistant sees it."""

    task_id: str
    type: str | None = None
    source_task: str | None = Field(default=None, description="The video this one was made from (extend, lip-sync).")
    status: Literal["queued", "running", "succeeded", "failed", "timed_out"]
    raw_status: str = ""
    estimated_credits: int | None = None
    consumed_credits: int | None = None
    video_urls: list[str] = Field(default_factory=list)
    archived: bool = Field(default=False, description="The URL is of a copy kept in storage (it outlives the API's).")
    local_path: str | None = None
    error_message: str | None = None
    submitted_at: datetime | None = None
    expected_finish: datetime | None = Field(default=None, description="When the video is likely ready.")
    resource_uri: str
    next_step: str = Field(description="What to do next, in a sentence.")


class PlayerTask(VideoTask):
    """A task as the player card shows it: the video task, and what the card needs besides."""

    prompt: str | None = None
    duration: int | None = None
    request: dict[str, Any] = Field(description="The request's fields, to make another of the same.")


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


class StoryPlan(BaseModel):
    """A checked story: what runs when, what it costs, and whether the limits allow it now."""

    title: str
    stages: list[list[str]] = Field(description="Shots in the order they can run; shots of one stage run at once.")
    credits: dict[str, int] = Field(description="The price of each shot.")
    total: int
    film: list[str] = Field(description="The shots of the film, in order.")
    transition: str
    refused: str | None = Field(description="Why your limits would refuse it now; null when they allow it.")


class ShotStatus(BaseModel):
    state: Literal["waiting", "submitting", "running", "succeeded", "failed", "released", "unknown"]
    credits: int
    task_id: str | None = None
    video_url: str | None = None
    note: str | None = Field(default=None, description="Why it failed or was released.")


class StoryStatus(BaseModel):
    """A story as the assistant sees it: each shot's progress, then the film."""

    story_id: str
    title: str
    state: Literal["running", "succeeded", "failed"]
    note: str | None = Field(default=None, description="Why the story failed.")
    credits: int = Field(description="What its shots cost or hold (released shots excluded).")
    shots: dict[str, ShotStatus]
    film_url: str | None = None
    film_path: str | None = None
    resource_uri: str
    next_step: str = Field(description="What to do next, in a sentence.")


def to_story(record: StoryRecord) -> StoryStatus:
    if record.state is StoryState.SUCCEEDED:
        step = "Done: show the film to the user (film_url, or film_path on this machine)."
    elif record.state is StoryState.FAILED:
        step = "The story stopped; the note says which shot and why. Nothing more will be spent on it."
    else:
        step = f"Running: read {story_uri(record.story_id)} (or call get_story_status) in a minute or two."
    return StoryStatus(
        story_id=record.story_id,
        title=record.story.title,
        state=record.state.value,
        note=record.note,
        credits=record.credits,
        shots={
            i: ShotStatus.model_validate(shot.model_dump(exclude={"attempt_id", "stills"}))
            for i, shot in record.shots.items()
        },
        film_url=record.film_url,
        film_path=record.film_path if record.state is StoryState.SUCCEEDED else None,
        resource_uri=story_uri(record.story_id),
        next_step=step,
    )


def story_sentence(record: StoryRecord) -> str:
    if record.state is StoryState.SUCCEEDED:
        return f"Story {record.story_id} is ready: {record.film_url or record.film_path}"
    return f"Story {record.story_id} failed: {record.note}"


class SpendApproval(BaseModel):
    """The user's answer to "This will spend N credits. Continue?"."""

    approve: bool = Field(default=True, description="Start the video and spend the credits")


def model_list(service: KlingService) -> ModelList:
    described = catalog.describe_models(service.prices, service.unit, service.client.provider.takes_fields)
    return ModelList(models=[VideoModel.model_validate(m) for m in described])


async def to_video(service: KlingService, record: TaskRecord, *, waited_out: bool = False) -> VideoTask:
    expected_at = await service.expected_finish(record)
    return VideoTask(
        task_id=record.task_id,
        type=record.type,
        source_task=record.source_task,
        status=record.display_status,
        raw_status=record.raw_status,
        estimated_credits=record.estimated_credits,
        consumed_credits=record.consumed_credits,
        video_urls=[url]
        if record.archive_key and (url := await service.videos.lasting_url(record))
        else record.video_urls,
        archived=record.archive_key is not None,
        local_path=record.local_path,
        error_message=record.error_message,
        submitted_at=datetime.fromtimestamp(record.submitted_at, UTC),
        expected_finish=datetime.fromtimestamp(expected_at, UTC),
        resource_uri=task_uri(record.task_id),
        next_step=_next_step(record, waited_out),
    )


def from_task(task: Task) -> VideoTask:
    """A task the store does not know (stdio only), as the API describes it."""
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


def finished_sentence(record: TaskRecord) -> str:
    if record.outcome is Outcome.SUCCEEDED:
        return f"Video {record.task_id} is ready: {record.video_url}"
    if record.outcome is Outcome.TIMED_OUT:
        return f"Video {record.task_id} timed out: {record.error_message}"
    return f"Video {record.task_id} failed: {record.error_message}"


def _next_step(record: TaskRecord, waited_out: bool) -> str:
    if record.outcome is Outcome.SUCCEEDED:
        return "Done: show the video URL to the user."
    if record.outcome is Outcome.FAILED:
        return "The video failed; nothing more will come. The reason is in error_message."
    if record.outcome is Outcome.TIMED_OUT:
        return "It ran too long; the API may still finish it. Check later with get_video_status."
    lead = "Still running after the wait. " if waited_out else "Started. "
    return lead + f"Call wait_for_video('{record.task_id}') to get the video when it is ready."
