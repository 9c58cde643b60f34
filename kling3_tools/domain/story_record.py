"""What the store keeps about a running story: the story itself, where each shot stands, the stills made
from its clips, the film, and where the result goes (its origin, like a task's)."""

from __future__ import annotations

import time
import uuid
from enum import StrEnum

from pydantic import BaseModel, Field

from .records import Delivery, Origin
from .story import Story


class StoryState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every shot of the cut succeeded and the film is made
    FAILED = "failed"  # a shot failed, was released or has an unknown outcome, or the film could not be made


class ShotState(StrEnum):
    WAITING = "waiting"  # reserved: waits for the shots it needs
    SUBMITTING = "submitting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the task failed or timed out
    RELEASED = "released"  # never sent: its reserved credits were released
    UNKNOWN = "unknown"  # sent without an answer: it may have been created and charged

    @property
    def ended(self) -> bool:
        return self not in (ShotState.WAITING, ShotState.SUBMITTING, ShotState.RUNNING)

    @property
    def blocks(self) -> bool:
        """It will give no input to the shots that need it."""
        return self in (ShotState.FAILED, ShotState.RELEASED, ShotState.UNKNOWN)


class ShotRecord(BaseModel):
    attempt_id: str
    credits: int
    state: ShotState = ShotState.WAITING
    task_id: str | None = None
    video_url: str | None = None
    note: str | None = None  # why it failed or was released
    stills: dict[str, str] = Field(default_factory=dict)  # "last_frame" / "first_frame" -> a hosted URL
    earlier: list[str] = Field(default_factory=list)  # the tasks (or attempts) of its runs before a retry


class StoryRecord(BaseModel):
    story_id: str
    api_url: str
    story: Story
    origin: Origin
    shots: dict[str, ShotRecord]
    state: StoryState = StoryState.RUNNING
    note: str | None = None  # why it failed
    created_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    due_at: float | None = Field(default_factory=time.time)
    film_path: str | None = None  # where the film is (or will be) written
    film_key: str | None = None  # its copy in [storage]
    film_url: str | None = None
    delivery: Delivery = Delivery.PENDING
    delivery_attempts: int = 0
    delivery_error: str | None = None
    failing_since: float | None = None  # advancing it has raised since then (it is given up after a day)

    @staticmethod
    def new_id() -> str:
        return f"story-{uuid.uuid4().hex[:16]}"

    @property
    def user_id(self) -> int | None:
        user_id = getattr(self.origin, "user_id", None)
        return user_id if isinstance(user_id, int) else None

    @property
    def owner(self) -> str | None:
        owner = getattr(self.origin, "owner", None)
        return owner if isinstance(owner, str) else None

    @property
    def credits(self) -> int:
        """What its shots cost or hold: the released ones spent nothing."""
        return sum(shot.credits for shot in self.shots.values() if shot.state is not ShotState.RELEASED)

    @property
    def stopped_by(self) -> tuple[str, ShotRecord] | None:
        """The shot that keeps the film from being made: the first (in file order) that failed or may have been
        charged without a result, else the first released."""
        blocking = [(i, shot) for i, shot in self.shots.items() if shot.state.blocks]
        charged = [(i, shot) for i, shot in blocking if shot.state is not ShotState.RELEASED]
        first = charged or blocking
        return first[0] if first else None

    def finish(self, state: StoryState, note: str | None = None) -> None:
        self.state, self.note, self.finished_at, self.due_at = state, note, time.time(), time.time()

    def summary(self) -> str:
        """One line: where each shot stands."""
        return ", ".join(f"{shot_id} {shot.state.value}" for shot_id, shot in self.shots.items())
