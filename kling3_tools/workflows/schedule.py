"""When to check a running task again: sparse early, dense around the expected finish, then back off.

The expected finish is a window learned from the store: the 5th to 95th
percentile of how long past tasks of the same type and duration took. Before
there is enough history, a prior from what integrators report (2-10 minutes).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, replace

from ..adapters.store import TaskStore
from ..config import PollerSettings
from ..domain.records import TaskRecord


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """The shape of the schedule, in seconds; `scaled()` shrinks it for demos and benchmarks."""

    prior_window: tuple[float, float] = (120.0, 600.0)
    dense_interval: float = 8.0
    max_interval: float = 60.0
    min_history: int = 5
    learn: bool = True
    jitter: float = 0.1
    # The provider calls back when a task ends: checks are a safety net for a lost callback, one as the task's
    # window closes, then one every `max_interval`.
    called_back: bool = False

    @classmethod
    def sized_for(cls, finish_seconds: float) -> SchedulePolicy:
        """A schedule for tasks that finish in seconds rather than minutes (the sandbox's)."""
        return cls(
            prior_window=(finish_seconds * 0.5, finish_seconds * 1.5),
            dense_interval=max(0.5, finish_seconds / 10),
            max_interval=max(2.0, finish_seconds),
        )

    @classmethod
    def from_settings(cls, settings: PollerSettings) -> SchedulePolicy:
        return cls(
            prior_window=settings.expected_seconds,
            learn=settings.learn_schedule,
            dense_interval=settings.dense_interval_seconds,
            max_interval=settings.max_interval_seconds,
        )

    def scaled(self, factor: float) -> SchedulePolicy:
        low, high = self.prior_window
        return replace(
            self,
            prior_window=(low * factor, high * factor),
            dense_interval=self.dense_interval * factor,
            max_interval=self.max_interval * factor,
        )

    def window(self, history: list[float]) -> tuple[float, float]:
        """Seconds after submission between which the task most likely finishes.

        History (the 5th to 95th percentile of past tasks) may move the window's start, and push its
        end later, but never ends it earlier than the configured expectation: history only holds tasks
        that finished, so while a batch runs it is biased towards the fast ones, and the tasks that
        outlive it are exactly those it knows least about.
        """
        if not self.learn or len(history) < self.min_history:
            return self.prior_window
        cuts = statistics.quantiles(history, n=20, method="inclusive")
        low, high = cuts[0], cuts[-1]
        return low, max(high, self.prior_window[1], low + self.dense_interval)

    def expected(self, history: list[float]) -> float:
        """Typical seconds to finish: the median of history, or the middle of the configured window."""
        if not self.learn or len(history) < self.min_history:
            return sum(self.prior_window) / 2
        return statistics.median(history)

    def delay(self, elapsed: float, window: tuple[float, float]) -> float:
        """Seconds from now until the next check of a task submitted `elapsed` seconds ago."""
        low, high = window
        if self.called_back:
            wait = high - elapsed if elapsed < high else self.max_interval
        elif elapsed < low / 2:
            wait = low / 2 - elapsed  # one early look, to catch fast failures
        elif elapsed < low - self.dense_interval:
            wait = low - elapsed
        elif elapsed < high:
            wait = self.dense_interval
        else:
            wait = min(max(self.dense_interval, (elapsed - high) / 2), self.max_interval)
        return max(wait, 0.0) * random.uniform(1 - self.jitter, 1 + self.jitter)


class Scheduler:
    """Applies a `SchedulePolicy` to records, with the history windows cached briefly."""

    def __init__(self, store: TaskStore, policy: SchedulePolicy | None = None, *, cache_seconds: float = 30.0) -> None:
        self.store = store
        self.policy = policy or SchedulePolicy()
        self._cache_seconds = cache_seconds
        self._history: dict[tuple[str, int | None], tuple[float, list[float]]] = {}

    async def _recent_history(self, type_: str, duration: int | None) -> list[float]:
        key = (type_, duration)
        cached = self._history.get(key)
        now = time.monotonic()
        if cached is None or now - cached[0] > self._cache_seconds:
            history = await self.store.completion_times(type_, duration) if self.policy.learn else []
            cached = (now, history)
            self._history[key] = cached
        return cached[1]

    async def window(self, type_: str, duration: int | None) -> tuple[float, float]:
        return self.policy.window(await self._recent_history(type_, duration))

    async def expected_finish(self, record: TaskRecord) -> float:
        """When (epoch seconds) the task will most likely be done."""
        return record.submitted_at + self.policy.expected(await self._recent_history(record.type, record.duration))

    async def next_check(self, record: TaskRecord, now: float) -> float:
        """The time (epoch seconds) at which `record` should be checked next."""
        window = await self.window(record.type, record.duration)
        return now + self.policy.delay(now - record.submitted_at, window)
