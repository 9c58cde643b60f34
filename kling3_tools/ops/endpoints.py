"""`/healthz`, `/readyz` and `/metrics` served beside the process's own work, on `[metrics] listen`.

- `/healthz`: 200 while the event loop answers (a liveness probe restarts a wedged process).
- `/readyz`: 503 while the store does not answer, its schema is not the one this version needs, or a poller
  of this process is not following tasks; 200 `degraded` when more videos run than the status-check budget
  can follow (results will be late: add budget, not workers); else 200 `ready`. The body says which check.
- `/metrics`: the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import KlingError
from ..store.stats import capacity_warning
from .metrics import PrometheusObserver

if TYPE_CHECKING:
    from ..service import KlingService

log = logging.getLogger("kling3_tools.ops")

CHECK_SECONDS = 2.0  # a store slower than this to answer a probe or a scrape counts as down


async def readiness(service: KlingService, observer: PrometheusObserver) -> tuple[str, dict[str, str]]:
    """(`ready`, `degraded` or `not ready`, what each check found)."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            await service.store.check_schema()
            stats = await observer.figures.refresh(service.store)
    except TimeoutError:
        checks["store"] = f"no answer within {CHECK_SECONDS:g} s"
        return "not ready", checks
    except Exception as exc:
        checks["store"] = exc.message if isinstance(exc, KlingError) else f"{type(exc).__name__}: {exc}"
        return "not ready", checks
    checks["store"] = "ok"
    stalled = [poller for poller in service.pollers if not poller.is_following]
    checks["poller"] = (
        "; ".join(f"{p.owner}: {p.last_error or 'not running'}" for p in stalled)
        if stalled
        else f"{len(service.pollers)} following"
    )
    if stalled or not service.pollers:
        return "not ready", checks
    warning = capacity_warning(stats, service.settings.poller.rate_limit_per_second)
    checks["capacity"] = warning or "ok"
    return ("degraded" if warning else "ready"), checks


def app(service: KlingService, observer: PrometheusObserver) -> Starlette:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        status, checks = await readiness(service, observer)
        return JSONResponse({"status": status, "checks": checks}, status_code=503 if status == "not ready" else 200)

    async def metrics(request: Request) -> Response:
        with contextlib.suppress(Exception):  # the store's figures go stale rather than failing the scrape
            async with asyncio.timeout(CHECK_SECONDS):
                await observer.figures.refresh(service.store)
        return Response(observer.exposition(), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    return Starlette(routes=routes)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the process's own SIGTERM handling (a graceful stop of its poller) stays in charge


@contextlib.asynccontextmanager
async def serving(service: KlingService) -> AsyncIterator[None]:
    observer = service.observer
    if not isinstance(observer, PrometheusObserver):
        raise TypeError("open the service with ops.observer_for(settings, role) to expose its metrics")
    host, port = service.settings.metrics.address
    try:  # bound here, so a taken port is a clear error rather than uvicorn ending the process
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise KlingError(f"cannot listen on [metrics] listen = {service.settings.metrics.listen}: {exc}") from None
    config: Any = uvicorn.Config(
        app(service, observer), log_config=None, access_log=False, lifespan="off", log_level="warning"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    log.info("health and metrics on http://%s/metrics", service.settings.metrics.listen)
    try:
        yield
    finally:
        server.should_exit = True
        await task
        listener.close()
