"""Keeping a lease while work runs: renewed every third of its length, so a slow download, upload or stitch
never lets another worker take the same task or story; a dead worker stops renewing and its work passes on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("kling3_tools.poller")


@contextlib.asynccontextmanager
async def kept_lease(renew: Callable[[float], Awaitable[bool]], lease_seconds: float, name: str) -> AsyncIterator[None]:
    """While inside, call `renew(until)` every `lease_seconds / 3`; it returns False once the lease is lost."""
    done = asyncio.Event()

    async def keep() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), lease_seconds / 3)
                return
            # Never cancelled mid-statement: the job's end is signalled, not forced.
            try:
                held = await renew(time.time() + lease_seconds)
            except Exception as exc:
                log.warning("could not renew the lease on %s (%s); will try again", name, exc)
                continue
            if not held:
                if not done.is_set():
                    log.warning("lease on %s was lost while working on it", name)
                return

    keeper = asyncio.create_task(keep())
    try:
        yield
    finally:
        done.set()
        await keeper
