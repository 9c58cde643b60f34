"""`/healthz`, `/readyz` and `/metrics` served beside the process's own work, on `[metrics] listen`.

- `/healthz`: 200 while the event loop answers (a liveness probe restarts a wedged process).
- `/readyz`: 503 while the store does not answer, its schema is not the one this version needs, or a poller
  of this process is not following tasks; 200 `degraded` when more videos run than the status-check budget
  can follow (results will be late: add budget, not workers); else 200 `ready`. The body says which check
  (`Readiness`).
- `/metrics`: the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..adapters.store.stats import capacity_warning
from ..domain.errors import KlingError
from .inflight import OneAtATime
from .listener import bound, serve_on
from .metrics import PrometheusObserver

if TYPE_CHECKING:
    from ..service import KlingService

log = logging.getLogger("kling3_tools.ops")

CHECK_SECONDS = 2.0  # a store slower than this to answer a probe or a scrape counts as down
VERDICT_MAX_AGE = 1.0  # seconds a readiness verdict answers every probe that asks


class Readiness:
    """The process's readiness, judged at most once a second with at most one store query in flight, so no
    number of probes (or clients of an exposed port) loads the store or piles up threads on a locked file.

    Not ready: the store does not answer within CHECK_SECONDS or its schema is not this version's, or a
    poller of this process is not following. Degraded: the last known figures say more videos run than the
    status-check budget can follow (the figures are read in the background, never inside the probe)."""

    def __init__(self, service: KlingService, observer: PrometheusObserver) -> None:
        self.service = service
        self.observer = observer
        self._verdict: tuple[str, dict[str, str]] | None = None
        self._judged_at = 0.0
        self._judging: OneAtATime[tuple[str, dict[str, str]]] = OneAtATime()
        self._schema_checks: OneAtATime[None] = OneAtATime()

    async def verdict(self) -> tuple[str, dict[str, str]]:
        """(`ready`, `degraded` or `not ready`, what each check found)."""
        if self._verdict is not None and time.monotonic() - self._judged_at < VERDICT_MAX_AGE:
            return self._verdict
        return await self._judging.run(self._judge)

    async def _judge(self) -> tuple[str, dict[str, str]]:
        self._verdict = await self._checks()
        self._judged_at = time.monotonic()
        return self._verdict

    async def _checks(self) -> tuple[str, dict[str, str]]:
        checks: dict[str, str] = {}
        if problem := await self._store_problem():
            checks["store"] = problem
            return "not ready", checks
        checks["store"] = "ok"
        pollers = self.service.pollers
        stalled = [poller for poller in pollers if not poller.is_following]
        if not pollers or stalled:
            reasons = "; ".join(f"{p.owner}: {p.last_error or 'not running'}" for p in stalled)
            checks["poller"] = reasons or "none started yet"
            return "not ready", checks
        checks["poller"] = f"{len(pollers)} following"
        self.observer.figures.refresh_soon(self.service.store)
        stats = self.observer.figures.latest
        warning = stats and capacity_warning(stats, self.service.settings.poller.rate_limit_per_second)
        checks["capacity"] = warning or "ok"
        return ("degraded" if warning else "ready"), checks

    async def _store_problem(self) -> str | None:
        try:  # a check still stuck on the store is waited on again, never doubled
            async with asyncio.timeout(CHECK_SECONDS):
                await self._schema_checks.run(self.service.store.check_schema)
        except TimeoutError:
            return f"no answer within {CHECK_SECONDS:g} s"
        except Exception as exc:
            return exc.message if isinstance(exc, KlingError) else f"{type(exc).__name__}: {exc}"
        return None


def app(service: KlingService, observer: PrometheusObserver) -> Starlette:
    readiness = Readiness(service, observer)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        status, checks = await readiness.verdict()
        return JSONResponse({"status": status, "checks": checks}, status_code=503 if status == "not ready" else 200)

    async def metrics(request: Request) -> Response:
        with contextlib.suppress(Exception):  # the store's figures go stale rather than failing the scrape
            async with asyncio.timeout(CHECK_SECONDS):
                await observer.figures.refresh(service.store)
        return Response(observer.exposition(), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    return Starlette(routes=routes)


@contextlib.asynccontextmanager
async def serving(service: KlingService) -> AsyncIterator[None]:
    observer = service.observer
    if not isinstance(observer, PrometheusObserver):
        raise TypeError("open the service with ops.observer_for(settings, role) to expose its metrics")
    listener = bound("[metrics] listen", service.settings.metrics.listen, *service.settings.metrics.address)
    async with serve_on(listener, app(service, observer)):
        log.info("health and metrics on http://%s/metrics", service.settings.metrics.listen)
        yield
