"""The one path every generate takes, for every front end and for stories: reserve → POST → record; and
settling by hand what the ledger cannot know (`resolve`: a generate whose outcome is unknown).

`Spending` is built from the parts it uses (client, store, scheduler, observer) and knows nothing of
front ends or stories; see `ledger` for the states an attempt goes through. A task id the API returned
is never dropped: when its task cannot be recorded, the id is kept on the attempt for the pollers to
record (`store.kept_ids`), and when the store does not answer at all, it is waited for with the answer
held in memory (`store.pg_connections.RECORD_PATIENCE_SECONDS`) before anything is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from ..adapters.client import AsyncKlingClient
from ..adapters.store import TaskStore
from ..config import BudgetSettings
from ..domain.errors import KlingError, RequestValidationError, SpendingRefusedError, StoreError, StoreUnavailableError
from ..domain.ledger import (
    OPEN_STATES,
    Attempt,
    AttemptState,
    SpendLimit,
    check_limits,
    failure_note,
    outcome_of,
    unknown_outcome,
)
from ..domain.models import GenerateRequest
from ..domain.records import AnyOrigin, CliOrigin, TaskRecord
from ..domain.rules import unresolved
from ..domain.tasks import Task
from .observe import Observer
from .schedule import Scheduler

log = logging.getLogger("kling3_tools")

RELEASE_UNFOUND_AFTER = 900.0  # seconds past an unknown attempt's deadline before "no such task" releases it
NOTHING_CREATED = "the API has no task sent with this attempt's id: nothing was created"


class Spending:
    def __init__(
        self,
        client: AsyncKlingClient,
        store: TaskStore,
        scheduler: Scheduler,
        observer: Observer,
        budget: BudgetSettings,
        *,
        api_url: str,
        wake: Callable[[], None],
    ) -> None:
        self.client = client
        self.prices = client.provider.prices  # what its provider charges, in its own unit
        self.store = store
        self.scheduler = scheduler
        self.observer = observer
        self.api_url = api_url
        self.wake_pollers = wake  # a new task is due at once
        self.budget = SpendLimit(
            "budget", daily_credits=budget.daily_credits, max_credits_per_video=budget.max_credits_per_video
        )
        # A generate past this (its client's own retries included, and a margin) has an unknown outcome.
        self.attempt_deadline = client.retry.longest(client.deadline) + 5

    async def submit(
        self,
        request: GenerateRequest,
        origin: AnyOrigin | None = None,
        *,
        limits: Sequence[SpendLimit] = (),
        on_created: Callable[[Task], None] | None = None,
    ) -> TaskRecord:
        """See `KlingService.submit`."""
        if problems := unresolved(request):
            raise RequestValidationError(problems)
        self.client.provider.refuse(request)
        attempt = Attempt.new(
            request,
            api_url=self.api_url,
            origin=origin or CliOrigin(),
            deadline=self.attempt_deadline,
            prices=self.prices,
        )
        await self.reserved(self.store.reserve(attempt, [self.budget, *limits]))
        return await self._send(attempt, request, on_created)

    async def reserved(self, reservation: Awaitable[None]) -> None:
        """Await a ledger reservation: a refusal as it is, a store failure as `StoreError` (nothing was sent)."""
        try:
            await reservation
        except SpendingRefusedError as refused:
            self.observer.reservation("refused")
            self.observer.refusal(refused.limit)
            raise
        except KlingError:
            raise
        except Exception as exc:
            self.observer.reservation("store_failed")
            raise StoreError(
                f"Nothing was sent: the task store {self.store!r} cannot record the spend ({exc})."
            ) from exc
        self.observer.reservation("reserved")

    async def submit_reserved(
        self, attempt: Attempt, request: GenerateRequest, on_created: Callable[[Task], None] | None = None
    ) -> TaskRecord | None:
        """Send a story's reserved shot with its real inputs: `reserved` → `submitting` in one conditional
        update (so it is sent once, whoever tries), then on as `submit`. None when it is no longer reserved."""
        expires_at = time.time() + self.attempt_deadline
        if not await self.store.start_reserved(attempt.attempt_id, request.recorded(), expires_at=expires_at):
            return None
        started = attempt.model_copy(update={"state": AttemptState.SUBMITTING, "expires_at": expires_at})
        return await self._send(started, request, on_created)

    async def _send(
        self, attempt: Attempt, request: GenerateRequest, on_created: Callable[[Task], None] | None = None
    ) -> TaskRecord:
        """POST a reserved attempt's request, then record the task and its attempt `submitted` at once."""
        try:
            async with asyncio.timeout(attempt.expires_at - time.time()):
                task = await self.client.generate(request, attempt_id=attempt.attempt_id)
        except BaseException as exc:
            raise await self._unsettled(attempt, exc) from None
        if on_created is not None:
            on_created(task)
        record = TaskRecord.submitted(
            task, request, api_url=self.api_url, origin=attempt.origin, estimated_credits=attempt.estimated_credits
        )
        record.due_at = await self.first_check(record)
        try:  # a store that does not answer is waited for (minutes), with the task held here
            await self.store.settle(attempt.attempt_id, record)
        except Exception as exc:
            raise await self._unrecorded(attempt, task, exc) from exc
        self.wake_pollers()
        return record

    async def _unsettled(self, attempt: Attempt, failure: BaseException) -> BaseException:
        """Close the attempt of a generate that returned no task; the exception to raise in its place."""
        state, note = outcome_of(failure), failure_note(attempt, failure)
        try:  # shielded: a Ctrl-C that cancelled the POST must still leave the attempt marked
            await asyncio.shield(self.store.close_attempt(attempt.attempt_id, state, note))
        except Exception as exc:  # it stays `submitting`, which reads as `unknown` after its deadline
            log.warning("could not mark %s %s: %s", attempt.attempt_id, state.value, exc)
        if state is AttemptState.RELEASED or not isinstance(failure, Exception):
            return failure
        return unknown_outcome(attempt, note)

    async def _unrecorded(self, attempt: Attempt, task: Task, failure: Exception) -> KlingError:
        """A created task that could not be recorded: its id kept on the attempt for the pollers to record,
        when the store answers at all; the error that says so."""
        created = f"Task {task.task_id} was created ({task.consumed_credits} credits) but could not be recorded"
        with contextlib.suppress(Exception):  # a store that did not answer is not asked again
            if not isinstance(failure, StoreUnavailableError) and await self.store.keep_task_id(
                attempt.attempt_id, task.task_id
            ):
                self.wake_pollers()
                return KlingError(f"{created} at once ({failure}); a poller records and follows it now.")
        return KlingError(
            f"{created}: {failure}. It stays in the ledger as {attempt.attempt_id}: record it with "
            f"`kling3 tasks resolve {attempt.attempt_id} --task-id {task.task_id}`, or follow it with "
            f"`kling3 wait {task.task_id}`."
        )

    async def resolve(self, attempt_id: str, *, task_id: str | None) -> tuple[Attempt, TaskRecord | None]:
        """Settle an open attempt by hand (`kling3 tasks resolve`): attach the task the dashboard shows (checked
        with the API), or, with no `task_id`, release it because nothing was created. The attempt as it was,
        and the task's record (None when released)."""
        attempt = await self.store.get_attempt(attempt_id)
        if attempt is None:
            raise KlingError(f"No attempt {attempt_id} in the ledger (`kling3 tasks` lists the open ones).")
        if attempt.state not in OPEN_STATES:
            already = f"{attempt_id} is already {attempt.state.value}"
            raise KlingError(already + (f" as {attempt.task_id}." if attempt.task_id else "."))
        if task_id is None:
            await self.store.close_attempt(attempt_id, AttemptState.RELEASED, "released by hand: nothing was created")
            return attempt, None
        if attempt.state is AttemptState.RESERVED:
            raise KlingError(f"{attempt_id} is a story's shot that was never sent: release it, or let the story run.")
        if attempt.api_url != self.api_url:
            raise KlingError(f"{attempt_id} was sent to {attempt.api_url}; resolve it with that API (--base-url).")
        task = await self.client.status(task_id, attempt.type)
        record = attempt.recorded_as(task)
        record.apply(task, time.time())
        if record.is_tracking:
            record.due_at = await self.first_check(record)
        await self.store.settle(attempt_id, record)
        return attempt, record

    async def settle_unknown(self, now: float | None = None) -> list[Attempt]:
        """Ask the API about each attempt whose outcome is unknown, by the attempt id it was sent with, where the
        provider keeps the caller's id: the task it created is recorded and followed; one the API still has no
        task for `RELEASE_UNFOUND_AFTER` past its deadline is released. The attempts settled."""
        if not self.client.provider.finds_by_attempt_id:
            return []
        now = time.time() if now is None else now
        settled = []
        for attempt in await self.store.attempts(open_only=True):
            if attempt.api_url != self.api_url or attempt.state_at(now) is not AttemptState.UNKNOWN:
                continue
            try:
                task = await self.client.find(attempt.attempt_id, attempt.type)
                if task is not None:
                    await self.resolve(attempt.attempt_id, task_id=task.task_id)
                elif now > attempt.expires_at + RELEASE_UNFOUND_AFTER:
                    await self.store.close_attempt(attempt.attempt_id, AttemptState.RELEASED, NOTHING_CREATED)
                else:
                    continue
            except KlingError as exc:  # asked again at the next look
                log.info("%s: its outcome could not be asked of the API yet (%s)", attempt.attempt_id, exc.message)
                continue
            log.info("%s settled from the API: %s", attempt.attempt_id, task.task_id if task else "nothing created")
            settled.append(attempt)
        return settled

    async def first_check(self, record: TaskRecord) -> float:
        """When to check the new task first; a failed history read must not lose the task: then at once."""
        try:
            return await self.scheduler.next_check(record, record.submitted_at)
        except Exception as exc:
            log.warning("no schedule for %s (%s): it is checked at once", record.task_id, exc)
            return record.submitted_at

    async def check_spend(self, credits: int, limits: Sequence[SpendLimit] = (), *, dearest: int | None = None) -> None:
        """See `KlingService.check_spend`."""
        every = [self.budget, *limits]
        usages = {limit: await self.store.usage(limit) for limit in every if limit.counts_usage}
        try:
            check_limits(credits, time.time(), every, usages.__getitem__, dearest=dearest)
        except SpendingRefusedError as refused:
            self.observer.refusal(refused.limit)
            raise
