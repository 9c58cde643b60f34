"""The PostgreSQL store's connections: one pool per process, and what a lost server costs.

A restart or a failover cuts every pooled connection, and nothing notices until a statement meets a dead
one. Then the pool is checked at once (each idle connection tried, the dead ones replaced: psycopg_pool's
`check`), so one restart costs a failed statement, not one per pooled connection; and the statement runs
again after 0.1 s, doubling to 2 s, until the server answers or the caller's patience runs out
(`StoreUnavailableError`). A server that is back is used within 2 s: the pool gives up a reconnection
after `RECONNECT_SECONDS` instead of backing off for minutes, and the next statement asks for a new one.

Every statement given to `run` must be safe to run twice (a connection may be cut after a commit and
before its answer): reads, and writes that are idempotent by their ids, as the stores' are. A conditional
write whose commit landed in that instant reads as "changed nothing" on its retry (a lease `save` then logs
a lost lease; a story shot's `start_reserved` leaves the shot to be resolved as `unknown`): rare, and never
a spend sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ...domain.errors import StoreError, StoreUnavailableError
from . import RETRY_LAST_SECONDS, retry_delay
from .pg_schema import Connection, connect, describe_url, is_connection_error, without_password

log = logging.getLogger("kling3_tools.store")
# psycopg_pool logs every failed reconnection (dozens in one restart); `Connections` says once when the server
# is lost and once when it is back. An operator who set the pool's logger a level keeps it.
if logging.getLogger("psycopg.pool").level == logging.NOTSET:
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

Result = TypeVar("Result")

RECONNECT_SECONDS = 1.0  # a reconnection the pool started gives up after this; the next statement starts another
PATIENCE_SECONDS = 10.0  # how long a statement waits for a server that does not answer, unless told otherwise
# How long a process holds a task the API created, waiting for the store to record it, before it says so.
RECORD_PATIENCE_SECONDS = 300.0


class Connections:
    """Run statements on pooled connections, waiting out a server that is restarting."""

    def __init__(self, url: str, pool: AsyncConnectionPool[Connection]) -> None:
        self.url = url
        self.pool = pool
        self._lost_at: float | None = None

    @classmethod
    async def open(cls, url: str, *, pool_size: int, configure: Callable[[Connection], Awaitable[None]]) -> Connections:
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            configure=configure,
            open=False,
            name="kling3",
            reconnect_timeout=RECONNECT_SECONDS,
        )
        try:
            await pool.open(wait=True, timeout=10)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailableError(f"cannot reach PostgreSQL at {describe_url(url)}: {exc}") from None
        return cls(url, pool)

    async def run(
        self, work: Callable[[Connection], Awaitable[Result]], *, patience: float = PATIENCE_SECONDS
    ) -> Result:
        """`work` on a pooled connection; after a connection error, again on another, for up to `patience`
        seconds in all."""
        deadline = time.monotonic() + patience
        tries = 0
        while True:
            wait = max(min(deadline - time.monotonic(), RETRY_LAST_SECONDS), 0.01)
            try:
                async with self.pool.connection(timeout=wait) as conn:
                    result = await work(conn)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self._lost(exc)
                delay = retry_delay(tries)
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailableError(
                        f"PostgreSQL at {describe_url(self.url)} did not answer for {patience:g} s "
                        f"({self._describe(exc)})"
                    ) from None
                await self.pool.check()  # the other pooled connections the restart cut, replaced now
                await asyncio.sleep(delay)
                tries += 1
                continue
            self._regained()
            return result

    def _describe(self, exc: BaseException) -> str:
        return without_password(str(exc).strip() or type(exc).__name__, self.url)

    def _lost(self, exc: BaseException) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning("lost PostgreSQL at %s (%s); retrying", describe_url(self.url), self._describe(exc))

    def _regained(self) -> None:
        if self._lost_at is not None:
            log.warning(
                "PostgreSQL at %s answers again (%.1f s after it was lost)",
                describe_url(self.url),
                time.monotonic() - self._lost_at,
            )
            self._lost_at = None

    @contextlib.asynccontextmanager
    async def listening(self, channel: str, heard: Callable[[str | None], object]) -> AsyncIterator[None]:
        """While inside, `heard(payload)` on each NOTIFY on `channel`, and `heard(None)` whenever listening starts
        again (what was sent meanwhile is lost)."""
        listener = asyncio.create_task(self._listen(channel, heard))
        try:
            yield
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, channel: str, heard: Callable[[str | None], object]) -> None:
        """On a connection of its own; when it drops, tried again as statements are (0.1 s, doubling to 2 s)."""
        tries = 0
        while True:
            try:
                async with await connect(self.url) as conn:
                    await conn.execute(f"LISTEN {channel}")
                    tries = 0
                    heard(None)  # what was sent while nobody listened
                    async for notify in conn.notifies():
                        heard(notify.payload)
            except (psycopg.Error, StoreError) as exc:
                if tries == 0:
                    log.warning("notifications on %s lost (%s); listening again once the server answers", channel, exc)
                await asyncio.sleep(retry_delay(tries))
                tries += 1

    async def close(self) -> None:
        await self.pool.close()
