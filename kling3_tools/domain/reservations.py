"""Reservations in batches: a burst of generates (or a story's shots) judged in order against the limits as if
each had reserved alone (`decide`), and group-committed (`ReservationQueue`): while one batch holds the store's
lock, the next one gathers. The stores run a batch in one transaction (see `ledger` for the rules)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SpendingRefusedError
from .ledger import Attempt, SpendLimit, Usage, check_limits

if TYPE_CHECKING:
    from .story_record import StoryRecord

log = logging.getLogger("kling3_tools.ledger")


@dataclass(slots=True)
class Reservation:
    """Attempts reserved together or not at all (one generate, or every shot of a story) waiting for their
    turn in a batch, the limits they must pass, and the story written in the same transaction (if any)."""

    attempts: Sequence[Attempt]
    limits: Sequence[SpendLimit]
    story: StoryRecord | None = None  # written with its shots' attempts
    refused: SpendingRefusedError | None = None

    @property
    def credits(self) -> int:
        return sum(attempt.estimated_credits for attempt in self.attempts)

    def check(self, usage: Callable[[SpendLimit], Usage]) -> None:
        """A story is judged as one: its total against the budgets, its dearest shot against the per-video
        caps, and one more running video against the running limits (it counts as one while any of its shots
        is held, sent or running)."""
        dearest = max(attempt.estimated_credits for attempt in self.attempts) if len(self.attempts) > 1 else None
        check_limits(self.credits, self.attempts[0].created_at, self.limits, usage, dearest=dearest)


def decide(batch: Sequence[Reservation], usage: Callable[[SpendLimit], Usage]) -> list[Reservation]:
    """Judge a batch in order, as if each had reserved alone: every counted limit of the batch is read once,
    and an accepted reservation counts against every one whose scope covers it before the next is judged.
    Marks the refused ones; returns the accepted ones."""
    seen = {limit: usage(limit) for r in batch for limit in r.limits if limit.counts_usage}
    accepted = []
    for reservation in batch:
        try:
            reservation.check(seen.__getitem__)
        except SpendingRefusedError as refusal:
            reservation.refused = refusal
            continue
        accepted.append(reservation)
        first = reservation.attempts[0]
        for limit, was in seen.items():  # one more running video: a generate, or a story (whatever its shots)
            if limit.scope.covers(first):
                seen[limit] = Usage(was.credits + reservation.credits, was.running + 1, first.created_at)
    return accepted


class ReservationQueue:
    """Group commit for reservations: while one batch holds the store's lock, the next one gathers, so a
    burst in one process costs one transaction per batch rather than one lock hand-over per attempt."""

    def __init__(
        self,
        run: Callable[[list[Reservation]], Awaitable[None]],
        abandon: Callable[[Attempt], Awaitable[object]],
    ) -> None:
        self._run = run
        self._abandon = abandon  # writes off an attempt reserved for a caller that was cancelled meanwhile
        self._waiting: list[tuple[Reservation, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def reserve(
        self, attempts: Sequence[Attempt], limits: Sequence[SpendLimit], story: StoryRecord | None = None
    ) -> None:
        reservation = Reservation(attempts, limits, story)
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((reservation, done))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        await done
        if reservation.refused is not None:
            raise reservation.refused

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = [(reservation, done) for reservation, done in self._waiting if not done.cancelled()]
                self._waiting = []
                try:
                    await self._run([reservation for reservation, _ in batch])
                except BaseException as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for reservation, done in batch:
                        if not done.done():
                            done.set_result(None)
                        elif done.cancelled() and reservation.refused is None:  # never sent: stop counting it
                            for attempt in reservation.attempts:
                                try:
                                    await self._abandon(attempt)
                                except Exception as exc:  # it stays open: counted (`submitting`: then `unknown`)
                                    log.warning("could not release %s: %s", attempt.attempt_id, exc)
        finally:
            self._drainer = None
