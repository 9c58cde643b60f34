"""What each poller does now and then besides its tasks: prune what `[store] keep_days` lets go, once a day,
and warn every few minutes while more videos run than the status-check budget can follow."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..ledger import DAY_SECONDS
from .stats import capacity_warning

if TYPE_CHECKING:
    from . import TaskStore

log = logging.getLogger("kling3_tools.poller")

CAPACITY_EVERY = 300.0  # seconds between two looks at whether the request budget can follow the backlog


class Upkeep:
    def __init__(self, store: TaskStore, *, keep_days: float, rate: float) -> None:
        self.store = store
        self.keep_days = keep_days  # 0: keep everything
        self.rate = rate  # status checks per second
        self._pruned_at = self._capacity_at = 0.0

    async def run(self) -> None:
        """Whatever is due of either; a store error propagates (the sweep retries with backoff)."""
        if self.keep_days and time.time() - self._pruned_at > DAY_SECONDS:
            self._pruned_at = time.time()
            tasks, attempts = await self.store.prune(self._pruned_at - self.keep_days * DAY_SECONDS)
            log.info("pruned %d tasks and %d settled attempts older than %g days", tasks, attempts, self.keep_days)
        if time.time() - self._capacity_at > CAPACITY_EVERY:
            self._capacity_at = time.time()
            if warning := capacity_warning(await self.store.stats(), self.rate):
                log.warning(warning)
