"""The Prometheus metrics of one process: the core's events counted (`PrometheusObserver`), the store's calls
timed, and the store's figures (tasks by state, the due backlog, the capacity) read at each scrape.

Each process has its own registry, so two services in one process (tests) never share a counter."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..adapters.store import TaskStore
from ..adapters.store.stats import StoreStats, capacity_of
from ..domain.errors import SpendingRefusedError
from ..version import __version__
from ..workflows.observe import Observer
from .inflight import OneAtATime

PREFIX = "kling3"
STATS_MAX_AGE = 5.0  # seconds a scrape reuses the store's figures: scrapers and probes never load the store
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LAG_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
TASK_STATES = ("running", "succeeded", "failed", "timed_out", "to_deliver")


class StoreFigures(Collector):
    """The latest `StoreStats` as gauges. They are read again when older than STATS_MAX_AGE, one read at a
    time however many scrapes and probes ask: the store never sees more than one of these queries at once."""

    def __init__(self, rate: float) -> None:
        self.rate = rate  # the poller's status checks per second, which the capacity is measured against
        self.latest: StoreStats | None = None
        self.read_at = 0.0
        self._reads: OneAtATime[None] = OneAtATime()

    @property
    def stale(self) -> bool:
        return self.latest is None or time.monotonic() - self.read_at > STATS_MAX_AGE

    async def refresh(self, store: TaskStore) -> StoreStats | None:
        """Fresh figures, waiting for the read in flight (a caller that gives up does not cancel it)."""
        if self.stale:
            await self._reads.run(lambda: self._read(store))
        return self.latest

    def refresh_soon(self, store: TaskStore) -> None:
        """Start a read when the figures are stale and none is in flight."""
        if self.stale:
            self._reads.start(lambda: self._read(store))

    async def _read(self, store: TaskStore) -> None:
        self.latest, self.read_at = await store.stats(), time.monotonic()

    def collect(self) -> Iterator[Metric]:
        stats = self.latest
        if stats is None:
            return
        tasks = GaugeMetricFamily(f"{PREFIX}_tasks", "Tasks in the store by state", labels=["state"])
        for state in TASK_STATES:
            tasks.add_metric([state], getattr(stats, state))
        yield tasks
        yield GaugeMetricFamily(
            f"{PREFIX}_tasks_due", "Tracked tasks whose next check is due and that no poller holds", stats.due_now
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_due_seconds", "How late the most overdue check is", stats.oldest_due_seconds or 0.0
        )
        if (capacity := capacity_of(stats, self.rate)) is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_capacity_running_videos",
                "Videos running at once that the status-check budget can follow, by the measured history",
                capacity.running_at_once,
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_checks_per_video", "Status checks per successful video, measured", capacity.checks_per_video
            )


class PrometheusObserver(Observer):
    def __init__(self, role: str, rate: float) -> None:
        self.registry = CollectorRegistry()
        self.figures = StoreFigures(rate)
        self.registry.register(self.figures)

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(f"{PREFIX}_{name}", doc, labels, registry=self.registry, buckets=buckets)

        Gauge(f"{PREFIX}_build_info", "This process", ["version", "role"], registry=self.registry).labels(
            __version__, role
        ).set(1)
        self.status_answers = counter("status_checks", "Status checks by the API's answer (HTTP code)", "code")
        self.pauses = counter("rate_limit_pauses", "429 answers that paused every poller")
        self.paused_seconds = counter("rate_limit_paused_seconds", "Seconds every poller was paused by 429s")
        self.tokens = counter("rate_limit_tokens_taken", "Request tokens the poller took")
        self.token_wait = histogram("rate_limit_wait_seconds", "Waits for request tokens", WAIT_BUCKETS)
        self.deliveries = counter("deliveries", "Results handed to their origin", "kind", "result")
        self.delivery_lag = histogram(
            "delivery_lag_seconds", "From a task's end to its result delivered", LAG_BUCKETS, "kind"
        )
        self.leases_lost = counter("leases_lost", "Leases lost while working", "what")
        self.reservations = counter("reservations", "Ledger reservations by result", "result")
        self.refusals = counter("refusals", "Reservations refused, by the limit that refused", "limit")
        self.store_seconds = histogram("store_seconds", "Task store calls", STORE_BUCKETS, "operation")
        self.store_errors = counter("store_errors", "Task store calls that failed", "operation")

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def watched(self, store: TaskStore) -> TaskStore:
        return cast(TaskStore, TimedStore(store, self))

    def status_answer(self, code: str) -> None:
        self.status_answers.labels(code).inc()

    def paused(self, seconds: float) -> None:
        self.pauses.inc()
        self.paused_seconds.inc(seconds)

    def tokens_taken(self, count: int, waited: float) -> None:
        self.tokens.inc(count)
        self.token_wait.observe(waited)

    def delivery(self, kind: str, result: str, lag: float | None = None) -> None:
        self.deliveries.labels(kind, result).inc()
        if lag is not None:
            self.delivery_lag.labels(kind).observe(max(lag, 0.0))

    def lease_lost(self, what: str) -> None:
        self.leases_lost.labels(what).inc()

    def reservation(self, result: str) -> None:
        self.reservations.labels(result).inc()

    def refusal(self, limit: str) -> None:
        self.refusals.labels(limit).inc()


class TimedStore:
    """A task store whose coroutine methods are timed by name; everything else passes through untouched."""

    def __init__(self, store: TaskStore, observer: PrometheusObserver) -> None:
        self._store = store
        self._observer = observer

    def __repr__(self) -> str:
        return repr(self._store)

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not inspect.iscoroutinefunction(found):
            return found
        timed = self._timed(name, found)
        setattr(self, name, timed)  # wrapped once: later lookups find it without __getattr__
        return timed

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        seconds = self._observer.store_seconds.labels(name)
        errors = self._observer.store_errors.labels(name)

        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            except SpendingRefusedError:  # a limit said no: the store answered
                raise
            except Exception:
                errors.inc()
                raise
            finally:
                seconds.observe(time.perf_counter() - started)

        return timed
