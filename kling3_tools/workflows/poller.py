"""The background poller: follows every tracked task to its end and delivers the result to its origin.

It claims due tasks from the store under a lease, checks their status through the store's shared rate
limiter (a 429 pauses every poller for `Retry-After`), and hands finished tasks to the notifier registered
for their origin kind. Any number of pollers, in any number of processes, can share one store. Delivery is
at-least-once: the delivered mark is written right after the destination accepted; a destination that fails
is retried with backoff, and never holds up other tasks. Events carry a stable `event_id` for receivers
that must not act twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..adapters.client import AsyncKlingClient, RetryPolicy
from ..adapters.store import TaskStore, retry_delay
from ..adapters.store.upkeep import Upkeep
from ..config import PollerSettings
from ..domain.errors import KlingError, RateLimitError, StoreUnavailableError, TaskNotFoundError
from ..domain.records import Delivery, Outcome, TaskRecord
from .finishing import Finishing
from .leases import kept_lease
from .notifiers import Notifiers, delivered, delivery_failed
from .observe import Observer
from .schedule import Scheduler

if TYPE_CHECKING:
    from .stories.runner import StoryRunner

log = logging.getLogger("kling3_tools.poller")

MAX_SWEEP_BACKOFF = 30.0


def level_of(failure: Exception) -> int:
    """A store that does not answer was logged by the store itself, once: the sweeps it fails are details."""
    return logging.INFO if isinstance(failure, StoreUnavailableError) else logging.WARNING


class Poller:
    """Run with `await poller.run()` (until cancelled); `wake()` after submitting a task."""

    def __init__(
        self,
        client: AsyncKlingClient,
        store: TaskStore,
        notifiers: Notifiers,
        scheduler: Scheduler,
        settings: PollerSettings | None = None,
        *,
        concurrency: int = 8,
        idle_seconds: float = 5.0,
        owner: str | None = None,
        api_url: str | None = None,
        archiver: Callable[[TaskRecord], Awaitable[None]] | None = None,
        keep_days: float = 0,
        stories: StoryRunner | None = None,
        observer: Observer | None = None,
        settle_unknown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        # No retries in the client (a wait would outlast the lease): the poller paces itself and reschedules.
        self.client = client.with_options(retry=RetryPolicy(max_retries=0))
        self.store = store
        self.notifiers = notifiers
        self.scheduler = scheduler
        self.settings = settings or PollerSettings()
        self.concurrency = concurrency
        self.idle_seconds = idle_seconds
        self.owner = owner or f"poller-{uuid.uuid4().hex[:12]}"
        self.api_url = api_url or self.client.base_url  # what the store's records name the API by
        self.limiter = store.rate_limiter(self.api_url, self.settings.own_rate, self.settings.rate_limit_burst or None)
        self.finishing = Finishing(self.client, self.settings, archiver)
        rate = self.settings.rate_limit_per_second
        self.upkeep = Upkeep(store, api_url=self.api_url, keep_days=keep_days, rate=rate, settle_unknown=settle_unknown)
        self.stories = stories  # advances the stories of the kinds this poller delivers
        self.observer = observer or Observer()
        self._story_job: asyncio.Task[None] | None = None
        self._wake, self._stopping = asyncio.Event(), asyncio.Event()
        self._running = False
        self.started = asyncio.Event()  # set once `run` has begun following
        self.failing_since: float | None = None
        self.last_error = ""

    def wake(self) -> None:
        """Look for due work now rather than at the next sweep."""
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; `run` then gives the jobs in flight `stop_grace_seconds` to finish, releases the
        leases of those that did not, and returns. Safe to call from a signal handler on the loop."""
        self._stopping.set()
        self._wake.set()

    async def stopped_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for `stop()`; True when it came."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def run_supervised(self) -> None:
        """`run`, restarted with capped backoff whenever it crashes, until `stop()`."""
        crashes = 0
        while True:
            try:
                await self.run()
                return  # stopped
            except Exception as exc:
                crashes += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(2.0**crashes, 30.0)
                log.error("the poller stopped (%s); restarting it in %.0fs", self.last_error, delay)
                if await self.stopped_within(delay):
                    return

    @property
    def is_following(self) -> bool:
        """Running, and its last sweep reached the store or found only that the store does not answer: a spend
        needs the store as well, so it cannot get ahead of a poller that sweeps again as soon as it answers."""
        return self._running and self.failing_since is None

    async def run(self) -> None:
        """Follow tasks until `stop()` (graceful) or cancellation (the leases of unfinished jobs are released); a
        failed sweep is retried with capped backoff: a locked or restarting store delays the work, never ends it."""
        await self.client.load_ahead()
        in_flight: set[asyncio.Task[None]] = set()
        kinds = self.notifiers.kinds()
        self._running = True
        self.started.set()
        try:
            outlook = await self.upkeep.outlook(kinds)
            log.info("poller %s started for %s (%s); %s", self.owner, self.api_url, ", ".join(kinds), outlook)
            async with self.store.watch_new_tasks(self.wake):
                sweeping = asyncio.create_task(self._loop(in_flight, kinds))
                stopping = asyncio.create_task(self._stopping.wait())
                try:
                    await asyncio.wait([sweeping, stopping], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in (sweeping, stopping):
                        waiter.cancel()
                    await asyncio.gather(sweeping, stopping, return_exceptions=True)
                if in_flight:
                    log.info("stopping: %d jobs in flight get %gs", len(in_flight), self.settings.stop_grace_seconds)
                    await asyncio.wait(in_flight, timeout=self.settings.stop_grace_seconds)
        finally:
            self._running = False
            await self._release(in_flight)

    async def _release(self, in_flight: set[asyncio.Task[None]]) -> None:
        """Cancel what is left and hand back every lease this poller still holds (those of cancelled jobs,
        and of a claim that a stop cut short), rather than let them run out."""
        unfinished = list(in_flight)
        for job in unfinished:
            job.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        try:
            released = await asyncio.shield(self.store.release_all(owner=self.owner))
        except Exception as exc:  # then they pass on when the leases run out
            log.warning("could not release the leases of %s: %s", self.owner, exc)
            return
        if released:
            log.info("released %d unfinished tasks for other pollers", released)

    async def _loop(self, in_flight: set[asyncio.Task[None]], kinds: list[str]) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._sweep(in_flight, kinds)
            except Exception as exc:
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(2.0**failures, MAX_SWEEP_BACKOFF) * random.uniform(0.5, 1.0)
                if isinstance(exc, StoreUnavailableError):  # it waited for its server already (and said so)
                    delay = retry_delay(failures - 1)
                else:
                    self.failing_since = self.failing_since or time.time()
                log.log(level_of(exc), "poller sweep failed (%s); trying again in %.1fs", self.last_error, delay)
                await self.stopped_within(delay)
                continue
            if failures:
                log.warning("poller sweeps work again after %d failures", failures)
                failures, self.failing_since, self.last_error = 0, None, ""

    async def _sweep(self, in_flight: set[asyncio.Task[None]], kinds: list[str]) -> None:
        self._wake.clear()
        await self.upkeep.run()
        if len(in_flight) >= self.concurrency:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            return
        story_due = await self._advance_stories(in_flight, kinds)  # before tasks, which may keep a poller busy
        next_due = await self.store.next_due(api_url=self.api_url, kinds=kinds)
        if next_due is not None and next_due <= time.time():
            # Tokens are taken before claiming, so a lease covers an HTTP call, never a wait
            # in the rate limiter (a 429 pause would otherwise outlast it).
            waiting_since = time.monotonic()
            allowance = await self.limiter.take(self.concurrency - len(in_flight))
            if self._stopping.is_set():
                return
            claimed = await self._claim(allowance, kinds)
            await self.limiter.give_back(allowance - len(claimed))
            self.observer.tokens_taken(len(claimed), time.monotonic() - waiting_since)
            for record in claimed:
                job = asyncio.create_task(self._process(record))
                in_flight.add(job)
                job.add_done_callback(in_flight.discard)
            if claimed:
                return
        await self._idle(in_flight, min((due for due in (next_due, story_due) if due is not None), default=None))

    async def _advance_stories(self, in_flight: set[asyncio.Task[None]], kinds: list[str]) -> float | None:
        """Start the job that advances due stories (one at a time); when none is due, when one will be."""
        if self.stories is None or self._story_job is not None:
            return None
        due = await self.store.next_story_due(api_url=self.api_url, kinds=kinds)
        if due is None or due > time.time():
            return due
        job = self._story_job = asyncio.create_task(self.stories.sweep(self.owner, kinds))
        in_flight.add(job)
        job.add_done_callback(in_flight.discard)
        job.add_done_callback(lambda _: setattr(self, "_story_job", None))
        return None

    async def _claim(self, limit: int, kinds: list[str]) -> list[TaskRecord]:
        return await self.store.claim(
            owner=self.owner,
            now=time.time(),
            lease_seconds=self.settings.lease_seconds,
            limit=limit,
            api_url=self.api_url,
            kinds=kinds,
        )

    async def _idle(self, in_flight: set[asyncio.Task[None]], next_due: float | None) -> None:
        """Sleep until the next task falls due, a job finishes, or someone calls `wake()`."""
        timeout = self.idle_seconds if next_due is None else min(max(next_due - time.time(), 0.01), self.idle_seconds)
        waiters = [asyncio.ensure_future(self._wake.wait()), *in_flight]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiters[0].cancel()

    async def _process(self, record: TaskRecord) -> None:
        try:
            async with kept_lease(self._renewer(record.task_id), self.settings.lease_seconds, record.task_id):
                if record.is_tracking:
                    await self._check(record)
                due = record.due_at is not None and record.due_at <= time.time()
                sent = False
                if not record.is_tracking and record.delivery is Delivery.PENDING and due:
                    sent = await self._deliver(record)
                saved = await self.store.save(record, owner=self.owner)
            if not saved:
                self.observer.lease_lost("task")
                log.warning("lease on %s was lost before its result was saved; it may be sent again", record.task_id)
            elif sent:
                log.info("delivered %s (%s) to %s", record.task_id, record.outcome, record.origin.kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one task's failure (or the store's) must not stop the poller
            log.warning("job on %s failed (%s: %s); it is tried again later", record.task_id, type(exc).__name__, exc)
            record.due_at = time.time() + self.scheduler.policy.max_interval
            try:
                await self.store.save(record, owner=self.owner)
            except Exception as again:  # the lease runs out and another sweep takes the task
                log.warning("could not reschedule %s: %s", record.task_id, again)

    def _renewer(self, task_id: str) -> Callable[[float], Awaitable[bool]]:
        return lambda until: self.store.renew(task_id, owner=self.owner, until=until)

    async def _check(self, record: TaskRecord) -> None:
        """Ask the API, then apply what it said; a task is timed out only by an answer that it is still
        running past `max_task_minutes`, never by a backlog that kept us from asking."""
        try:
            task = await self.client.status(record.task_id, record.type)
        except KlingError as exc:
            self.observer.status_answer(str(exc.status_code or "error"))
            await self._failed_check(record, exc)
            return
        self.observer.status_answer("200")
        record.poll_count += 1
        now = time.time()
        changed = record.apply(task, now)
        if record.is_tracking and now - record.submitted_at > self.settings.max_task_minutes * 60:
            record.error_message = (
                f"Still {record.raw_status or 'running'} after {self.settings.max_task_minutes:g} minutes; "
                f"the API may still finish and bill task {record.task_id}."
            )
            record.finish(Outcome.TIMED_OUT, now)
            return
        if record.is_tracking:
            record.due_at = await self.scheduler.next_check(record, now)
        if changed and record.is_tracking and not record.origin.story_id:  # an ending is announced once
            try:
                await self.notifiers[record.origin.kind].progress(record)
            except Exception as exc:
                log.info("progress update for %s failed: %s", record.task_id, exc)

    async def _failed_check(self, record: TaskRecord, failure: KlingError) -> None:
        """When to ask again: after a 429's pause (for every poller), soon after an API or network error."""
        if isinstance(failure, RateLimitError):
            pause = failure.retry_after if failure.retry_after is not None else self.scheduler.policy.dense_interval
            pause = min(pause, self.settings.max_retry_after_seconds)
            await self.limiter.pause(pause)
            self.observer.paused(pause)
            record.due_at = time.time() + pause
            log.info("rate limited; every check paused for %.1fs", pause)
        elif isinstance(failure, TaskNotFoundError):
            # The id came from the API's own answer, so a 404 is the API's hiccup, not a refund: the task is
            # asked again, and only past max_task_minutes given up as timed out, which still counts.
            now = time.time()
            if now - record.submitted_at > self.settings.max_task_minutes * 60:
                record.error_message = f"The API no longer knows task {record.task_id}; it may still have been billed."
                record.finish(Outcome.TIMED_OUT, now)
            else:
                record.due_at = now + self.scheduler.policy.dense_interval
        else:
            log.info("status of %s failed (%s); will retry", record.task_id, failure.code)
            record.due_at = time.time() + self.scheduler.policy.dense_interval

    async def _deliver(self, record: TaskRecord) -> bool:
        """Hand the result to its origin; True when the destination accepted it."""
        now = time.time()
        if not await self.store.renew(record.task_id, owner=self.owner, until=now + self.settings.lease_seconds):
            log.warning("lease on %s was lost before delivery; another poller has it", record.task_id)
            return False
        try:
            if record.origin.story_id:  # a shot: its story takes the result
                await self.store.wake_story(record.origin.story_id, now)
                self.wake()
            else:
                await self.finishing.keep(record)
                await self.notifiers[record.origin.kind].deliver(record)
        except Exception as exc:
            result = delivery_failed(record, exc, now)
            level = logging.WARNING if result == "given_up" else logging.INFO
            log.log(level, "delivery of %s failed (%s): %s", record.task_id, record.delivery_error, result)
            self.observer.delivery(record.origin.kind, result)
            return False
        if not record.origin.story_id:
            self.observer.delivery(record.origin.kind, "delivered", time.time() - (record.finished_at or now))
        delivered(record)
        return True
