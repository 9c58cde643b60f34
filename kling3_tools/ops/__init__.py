"""What an operator sees of a long-running process (`kling3 poller`, the Discord bot, `kling3 mcp`): `/healthz`,
`/readyz` and Prometheus `/metrics` on `[metrics] listen`, when it is set.

    async with KlingService.open(settings, observer=ops.observer_for(settings, "poller")) as service:
        async with ops.exposed(service):
            ...

Nothing here is imported, nor is `prometheus_client`, by a process that leaves `[metrics] listen` empty.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..domain.errors import missing_part
from ..launch import UsageError
from ..workflows.observe import Observer

if TYPE_CHECKING:
    from ..config import Settings
    from ..service import KlingService


def observer_for(settings: Settings, role: str) -> Observer | None:
    """The observer that counts this process's events for `/metrics`; None when metrics are off."""
    if not settings.metrics.listen:
        return None
    try:
        from .metrics import PrometheusObserver
    except ImportError as exc:
        raise UsageError(f"[metrics] listen is set, but {missing_part('metrics', 'metrics', exc)}") from None
    return PrometheusObserver(role, settings.poller.rate_limit_per_second)


@contextlib.asynccontextmanager
async def exposed(service: KlingService) -> AsyncIterator[None]:
    """Serve the endpoints of `service` (opened with `observer_for`'s observer) and receive its provider's
    callbacks, each while its `listen` is set, while inside."""
    async with contextlib.AsyncExitStack() as stack:
        if service.settings.metrics.listen:
            from .endpoints import serving

            await stack.enter_async_context(serving(service))
        if service.settings.callbacks.listen:
            from .callbacks import receiving

            await stack.enter_async_context(receiving(service))
        yield
