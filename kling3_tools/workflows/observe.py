"""What the core reports as it works, for an operator's metrics: each method is one event, and this base class
ignores them all. `kling3_tools.ops.metrics.PrometheusObserver` counts them when `[metrics] listen` is set, so
a process without metrics neither imports `prometheus_client` nor pays for more than a method call."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..adapters.store import TaskStore


class Observer:
    def watched(self, store: TaskStore) -> TaskStore:
        """The store every part of the service uses: the same one, or one whose calls are timed."""
        return store

    def status_answer(self, code: str) -> None:
        """A status check's answer: the HTTP code, or `error` when none came."""

    def paused(self, seconds: float) -> None:
        """A 429 paused every poller sharing the budget."""

    def tokens_taken(self, count: int, waited: float) -> None:
        """The poller took `count` request tokens after waiting `waited` seconds for them."""

    def delivery(self, kind: str, result: str, lag: float | None = None) -> None:
        """A result handed to its origin (`delivered`, `retrying`, `given_up`); `lag`: seconds since it ended."""

    def lease_lost(self, what: str) -> None:
        """A worker lost its lease on a `task` or `story` while working on it."""

    def reservation(self, result: str) -> None:
        """A ledger reservation `reserved`, `refused` or `store_failed`."""

    def refusal(self, limit: str) -> None:
        """A spend refused by `limit` (`[section] key`), when checked early or when reserving."""
