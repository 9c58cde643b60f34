"""What each poller does now and then besides its tasks: record the tasks created but not recorded at the
time (`kept_ids`), every second; ask the API about generates whose outcome is unknown where it can tell,
every few seconds; prune what `[store] keep_days` lets go, once a day; and warn every few
minutes while more videos run than the status-check budget can follow."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ...domain.errors import TaskExistsError
from ...domain.ledger import DAY_SECONDS, AttemptState
from ...domain.tasks import Task
from .stats import capacity_warning

if TYPE_CHECKING:
    from . import TaskStore

log = logging.getLogger("kling3_tools.poller")

CAPACITY_EVERY = 300.0  # seconds between two looks at whether the request budget can follow the backlog
ADOPT_EVERY = 1.0  # seconds between two looks for tasks created but not recorded
ADOPT_BATCH = 50
SETTLE_EVERY = 5.0  # seconds between two looks for generates whose outcome the API can tell


class Upkeep:
    def __init__(
        self,
        store: TaskStore,
        *,
        api_url: str,
        keep_days: float,
        rate: float,
        settle_unknown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.api_url = api_url
        self.keep_days = keep_days  # 0: keep everything
        self.rate = rate  # status checks per second
        self.settle_unknown = settle_unknown  # asks the API about generates whose outcome is unknown
        self._pruned_at = self._capacity_at = self._adopted_at = self._settled_at = 0.0

    async def run(self) -> None:
        """Whatever is due; a store error propagates (the sweep retries with backoff)."""
        if time.time() - self._adopted_at > ADOPT_EVERY:
            self._adopted_at = time.time()
            await self.adopt()
        if self.settle_unknown is not None and time.time() - self._settled_at > SETTLE_EVERY:
            self._settled_at = time.time()
            await self.settle_unknown()
        if self.keep_days and time.time() - self._pruned_at > DAY_SECONDS:
            self._pruned_at = time.time()
            tasks, attempts = await self.store.prune(self._pruned_at - self.keep_days * DAY_SECONDS)
            log.info("pruned %d tasks and %d settled attempts older than %g days", tasks, attempts, self.keep_days)
        if time.time() - self._capacity_at > CAPACITY_EVERY:
            self._capacity_at = time.time()
            if warning := capacity_warning(await self.store.stats(), self.rate):
                log.warning(warning)

    async def outlook(self, kinds: list[str]) -> str:
        """When there is work next, in words, for a poller's start-up line (a quiet poller is not a broken one)."""
        try:
            due = await self.store.next_due(api_url=self.api_url, kinds=kinds)
        except Exception as exc:
            return f"the store does not answer yet ({exc})"
        if due is None:
            return "no task to follow yet"
        return "work is due now" if due <= time.time() else f"the next check is due in {due - time.time():.0f} s"

    async def adopt(self) -> None:
        """Record each task whose id was kept on its attempt, due for a check at once; an id the store already
        has for another generate leaves its attempt `unknown` (the API may have charged twice)."""
        for attempt in await self.store.kept_task_ids(api_url=self.api_url, limit=ADOPT_BATCH):
            assert attempt.task_id is not None
            record = attempt.recorded_as(Task(task_id=attempt.task_id))
            record.due_at = time.time()
            try:
                await self.store.settle(attempt.attempt_id, record)
            except TaskExistsError:
                note = f"the API answered with task {attempt.task_id}, already recorded for another generate"
                if await self.store.close_attempt(attempt.attempt_id, AttemptState.UNKNOWN, note):
                    log.warning("%s: %s", attempt.attempt_id, note)
                continue
            log.warning(
                "recorded task %s of %s, which was not recorded when it was created", record.task_id, attempt.attempt_id
            )
