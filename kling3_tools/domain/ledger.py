"""The spend ledger: every generate is written down before it leaves, and counted against every limit.

`spending.Spending` owns the order, for every front end and for stories:

    reserve   one store transaction: check each limit that applies, write the attempt `submitting`
    POST      /api/generate
    settle    one store transaction: the task row in, the attempt `submitted` (or, failing that, the task
              id kept on the attempt for a poller to record)
      or      release (the API certainly created nothing), or `unknown` (it may have)

A story reserves every shot at once (`reserved`: its credits held, no deadline, nothing sent), all or
nothing, so a later shot is never refused after the first ones were paid; each shot then goes `reserved`
→ `submitting` (one conditional update, so it is sent at most once) and on as above.

Concurrent reservations (in batches: `reservations`) are serialised on the store (SQLite: `BEGIN IMMEDIATE`;
PostgreSQL: an advisory lock per limit scope), so N requests at once never start more than a limit allows.
An attempt that is open (`submitting`, `unknown`) counts against every limit exactly like a task; settling
moves the spend from the attempt to the task in one transaction, so it is never counted twice nor missed.
An attempt left `submitting` by a process that died reads as `unknown` once its deadline has passed, unless
it holds the task id the API returned (its task could not be recorded at once): a poller records that task.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from .catalog import PRICES, Prices
from .errors import APIConnectionError, APIError, OutcomeUnknownError, SpendingRefusedError
from .models import GenerateRequest
from .records import AnyOrigin, Origin, TaskRecord
from .tasks import Task

DAY_SECONDS = 24 * 3600


class AttemptState(StrEnum):
    RESERVED = "reserved"  # a story's shot: its credits held until it is sent or released
    SUBMITTING = "submitting"  # written; the POST may be in flight
    SUBMITTED = "submitted"  # the API returned a task id: the task row carries the spend now
    RELEASED = "released"  # the API certainly created nothing: counts for nothing
    UNKNOWN = "unknown"  # sent without an answer: may have been charged, counts until resolved


OPEN_STATES = (AttemptState.RESERVED, AttemptState.SUBMITTING, AttemptState.UNKNOWN)


class Attempt(BaseModel):
    """One generate, from before it is sent until it is a task or certainly nothing."""

    attempt_id: str
    api_url: str
    type: str
    request: dict[str, Any]
    estimated_credits: int
    origin: Origin
    created_at: float
    expires_at: float
    state: AttemptState = AttemptState.SUBMITTING
    task_id: str | None = None
    note: str | None = None

    @classmethod
    def new(
        cls,
        request: GenerateRequest,
        *,
        api_url: str,
        origin: AnyOrigin,
        deadline: float,
        state: AttemptState = AttemptState.SUBMITTING,
        prices: Prices = PRICES,
    ) -> Attempt:
        """`deadline`: seconds the POST may take once sent (a `reserved` attempt gets its own when it starts)."""
        now = time.time()
        return cls(
            attempt_id=f"attempt-{uuid.uuid4().hex[:16]}",
            api_url=api_url,
            type=request.type.value,
            request=request.recorded(),
            estimated_credits=request.estimated_credits(prices),
            origin=origin,
            created_at=now,
            expires_at=now + deadline,
            state=state,
        )

    @property
    def user_id(self) -> int | None:
        user_id = getattr(self.origin, "user_id", None)
        return user_id if isinstance(user_id, int) else None

    def state_at(self, now: float) -> AttemptState:
        """`submitting` past its deadline with no task id means its process died mid-request: the outcome is
        unknown. One with a task id had its answer: a poller records the task (`awaiting_record`)."""
        if self.state is AttemptState.SUBMITTING and self.task_id is None and now > self.expires_at:
            return AttemptState.UNKNOWN
        return self.state

    @property
    def awaiting_record(self) -> bool:
        """The API created its task, but the task could not be recorded with it: the next poller sweep does."""
        return self.state is AttemptState.SUBMITTING and self.task_id is not None

    def shown_state(self, now: float) -> str:
        return "created" if self.awaiting_record else self.state_at(now).value

    def recorded_as(self, task: Task) -> TaskRecord:
        """The record of the task this attempt created, dated when the attempt was sent."""
        request = GenerateRequest.model_validate(self.request)
        record = TaskRecord.submitted(
            task, request, api_url=self.api_url, origin=self.origin, estimated_credits=self.estimated_credits
        )
        record.submitted_at = self.created_at
        return record


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose spending a limit counts: everyone's, one front end's, or one Discord user's."""

    origin_kind: str | None = None
    user_id: int | None = None

    def __post_init__(self) -> None:
        if self.user_id is not None and self.origin_kind is None:
            raise ValueError("a user's scope names its front end (origin_kind)")

    @property
    def name(self) -> str:
        """`*:*`, `mcp:*`, `discord:42`: the scope's row in the store's hourly spend totals."""
        return f"{self.origin_kind or '*'}:{'*' if self.user_id is None else self.user_id}"

    @property
    def key(self) -> str:
        return f"kling3-ledger:{self.name}"

    def covers(self, attempt: Attempt) -> bool:
        return (self.origin_kind in (None, attempt.origin.kind)) and (self.user_id in (None, attempt.user_id))


@dataclass(frozen=True, slots=True)
class Usage:
    """What a scope has in flight and spent in the last 24 hours (tasks not failed, plus open attempts)."""

    credits: int = 0
    running: int = 0
    last_attempt_at: float | None = None


@dataclass(frozen=True, slots=True)
class SpendLimit:
    """The limits of one scope, named as in the config (`section` and each key); 0 disables each."""

    section: str
    scope: Scope = Scope()
    daily_credits: int = 0
    max_credits_per_video: int = 0
    max_running: int = 0
    cooldown_seconds: float = 0.0
    daily_key: str = "daily_credits"
    per_video_key: str = "max_credits_per_video"

    @property
    def counts_usage(self) -> bool:
        """Whether checking this limit reads the store (a per-video cap alone does not)."""
        return bool(self.daily_credits or self.max_running or self.cooldown_seconds)

    def left(self, usage: Usage) -> int | None:
        """Credits left in the 24-hour budget, or None when there is none."""
        return max(0, self.daily_credits - usage.credits) if self.daily_credits else None

    @property
    def per_video_only(self) -> SpendLimit:
        """This limit's cap per video alone (for each video of a story, its whole judged by the rest)."""
        return SpendLimit(
            self.section, max_credits_per_video=self.max_credits_per_video, per_video_key=self.per_video_key
        )

    @property
    def without_per_video(self) -> SpendLimit:
        return dataclasses.replace(self, max_credits_per_video=0)

    def refusal(self, credits: int, usage: Usage, now: float, what: str = "This video") -> tuple[str, str] | None:
        """Why this limit forbids spending `credits` now: the key that refuses (`[section] key`) and a sentence
        with the numbers; None when it allows it."""
        where = f"[{self.section}]"
        if self.max_credits_per_video and credits > self.max_credits_per_video:
            return f"{where} {self.per_video_key}", (
                f"{what} would cost {credits} credits, above the limit of {self.max_credits_per_video} "
                f"credits per video ({where} {self.per_video_key}). Choose a shorter, silent or cheaper model, "
                "or raise the limit."
            )
        if self.cooldown_seconds and usage.last_attempt_at is not None:
            wait = self.cooldown_seconds - (now - usage.last_attempt_at)
            if wait > 0:
                return f"{where} cooldown_seconds", (
                    f"Slow down: another video can start in {wait:.0f} s "
                    f"({where} cooldown_seconds = {self.cooldown_seconds:g})."
                )
        if self.max_running and usage.running >= self.max_running:
            return f"{where} max_concurrent_tasks_per_user", (
                f"{usage.running} videos in progress (the limit is {self.max_running}, "
                f"{where} max_concurrent_tasks_per_user). Wait for one to finish."
            )
        if self.daily_credits and usage.credits + credits > self.daily_credits:
            return f"{where} {self.daily_key}", (
                f"{what} would cost {credits} credits, but only {self.left(usage)} of the "
                f"{self.daily_credits}-credit budget for 24 hours are left ({usage.credits} spent or reserved; "
                f"{where} {self.daily_key}). Try later, or raise the limit."
            )
        return None


def check_limits(
    credits: int,
    now: float,
    limits: Sequence[SpendLimit],
    usage: Callable[[SpendLimit], Usage],
    *,
    dearest: int | None = None,
) -> None:
    """Raise `SpendingRefusedError` naming the first limit that forbids spending `credits` now; `usage` is
    asked only for limits that count usage (inside the store's transaction when reserving). For several
    videos at once (a story), `credits` is their total and `dearest` the one each per-video cap judges."""
    for limit in limits:
        used = usage(limit) if limit.counts_usage else Usage()
        if dearest is None:
            reason = limit.refusal(credits, used, now)
        else:
            reason = limit.per_video_only.refusal(dearest, Usage(), now, "Its dearest video") or (
                limit.without_per_video.refusal(credits, used, now, "This story")
            )
        if reason is not None:
            key, sentence = reason
            raise SpendingRefusedError(f"{sentence} Nothing was spent.", limit=key)


def outcome_of(failure: BaseException) -> AttemptState:
    """RELEASED when the API certainly created nothing (a 4xx, or a request that never left); else UNKNOWN."""
    if isinstance(failure, OutcomeUnknownError):
        return AttemptState.UNKNOWN
    if isinstance(failure, APIConnectionError):
        return AttemptState.RELEASED
    if isinstance(failure, APIError) and failure.status_code is not None and 400 <= failure.status_code < 500:
        return AttemptState.RELEASED
    return AttemptState.UNKNOWN  # a 5xx, an answer without a task id, a cancellation, a deadline: it may exist


def failure_note(attempt: Attempt, failure: BaseException) -> str:
    """What became of a generate that returned no task, for the ledger and the user."""
    if isinstance(failure, OutcomeUnknownError):
        return "sent, but no answer came back"
    if isinstance(failure, TimeoutError):
        return f"no answer within {attempt.expires_at - attempt.created_at:.0f} s"
    return str(failure) or type(failure).__name__


def unknown_outcome(attempt: Attempt, note: str) -> OutcomeUnknownError:
    return OutcomeUnknownError(
        f"The outcome of this generate is unknown ({note.rstrip('.')}): a task may have been created and "
        f"charged. It is recorded as {attempt.attempt_id} ({attempt.estimated_credits} credits) and counts "
        f"against every limit until resolved. Check your dashboard, then `kling3 tasks resolve "
        f"{attempt.attempt_id} --task-id ID` (or `--release` when nothing was created).",
        attempt_id=attempt.attempt_id,
    )
