"""What an operator reads of a store: tasks by state, the due backlog, and what the history says a video
costs in status checks and time, from which the capacity of a request budget follows (`capacity`)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from .rows import Statements

HISTORY = 500  # the latest successful tasks the measured figures come from


@dataclass(frozen=True, slots=True)
class StoreStats:
    running: int
    succeeded: int
    failed: int
    timed_out: int
    to_deliver: int  # ended, delivery still pending
    due_now: int  # tracked tasks whose next look is due and that no poller holds
    oldest_due_seconds: float | None  # how late the most overdue of them is
    checks_per_video: float | None  # status checks per successful video, over the latest HISTORY
    seconds_p50: float | None  # submission → success, over the same
    seconds_p90: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a budget of `rate` status checks per second can follow, given the measured history."""

    rate: float
    checks_per_video: float
    seconds_per_video: float

    @property
    def videos_per_day(self) -> int:
        return math.floor(self.rate * 86_400 / self.checks_per_video)

    @property
    def running_at_once(self) -> int:
        """Videos that may run at the same time: each needs `checks_per_video` checks over its lifetime."""
        return math.floor(self.rate * self.seconds_per_video / self.checks_per_video)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "videos_per_day": self.videos_per_day, "running_at_once": self.running_at_once}


class StatsQueries(Statements):
    """The operator's figures, mixed into each backend."""

    async def stats(self) -> StoreStats:
        p = self._dialect.param
        now = time.time()
        counts = (
            "SELECT COUNT(*) FILTER (WHERE outcome IS NULL) AS running, "
            "COUNT(*) FILTER (WHERE outcome = 'succeeded') AS succeeded, "
            "COUNT(*) FILTER (WHERE outcome = 'failed') AS failed, "
            "COUNT(*) FILTER (WHERE outcome = 'timed_out') AS timed_out, "
            "COUNT(*) FILTER (WHERE outcome IS NOT NULL AND delivery = 'pending') AS to_deliver, "
            f"COUNT(*) FILTER (WHERE due_at <= {p('now')} AND (lease_until IS NULL OR lease_until < {p('now')})) "
            f"AS due_now, MIN(due_at) FILTER (WHERE due_at <= {p('now')}) AS oldest_due FROM tasks"
        )
        history = (
            "SELECT poll_count, finished_at - submitted_at AS took FROM tasks WHERE outcome = 'succeeded' "
            f"ORDER BY finished_at DESC LIMIT {p('limit')}"
        )
        [row] = await self._fetch(counts, {"now": now})
        recent = await self._fetch(history, {"limit": HISTORY})
        took = sorted(float(r["took"]) for r in recent)
        return StoreStats(
            running=int(row["running"]),
            succeeded=int(row["succeeded"]),
            failed=int(row["failed"]),
            timed_out=int(row["timed_out"]),
            to_deliver=int(row["to_deliver"]),
            due_now=int(row["due_now"]),
            oldest_due_seconds=None if row["oldest_due"] is None else max(0.0, now - float(row["oldest_due"])),
            checks_per_video=sum(int(r["poll_count"]) for r in recent) / len(recent) if recent else None,
            seconds_p50=took[len(took) // 2] if took else None,
            seconds_p90=took[min(len(took) - 1, int(len(took) * 0.9))] if took else None,
        )


def capacity_of(stats: StoreStats, rate: float) -> Capacity | None:
    """The capacity of `rate` checks per second by the measured history; None before any video succeeded."""
    if not stats.checks_per_video or not stats.seconds_p50:
        return None
    return Capacity(rate, stats.checks_per_video, stats.seconds_p50)


def capacity_warning(stats: StoreStats, rate: float) -> str | None:
    """A sentence when more videos run than the request budget can follow in time, else None."""
    capacity = capacity_of(stats, rate)
    if capacity is None or stats.running <= capacity.running_at_once:
        return None
    return (
        f"{stats.running} videos are running, more than the {capacity.running_at_once} that "
        f"{rate:g} status checks/s can follow at {capacity.checks_per_video:.0f} checks per video: results will "
        "be reported late. Raise [poller] rate_limit_per_second if the API allows it (`kling3 store stats`)."
    )
