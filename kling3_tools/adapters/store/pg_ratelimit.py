"""The request budget of every worker on one PostgreSQL store: a token bucket kept in a `rate_limits` row."""

from __future__ import annotations

import asyncio

from ..ratelimit import default_burst, refill
from .pg_connections import Connections
from .pg_schema import Connection


class PostgresRateLimiter:
    """A token bucket kept in a `rate_limits` row, on the database's clock, shared by every worker.

    A worker that finds no token takes the next one due (the row's tokens go below zero) and sleeps until
    then: one transaction per take, however many workers wait, rather than all of them retrying the
    row-locked transaction whenever a token might be there."""

    def __init__(self, connections: Connections, api_url: str, rate: float, burst: float | None = None) -> None:
        self._db = connections
        self.api_url = api_url
        self.rate = rate
        self.burst = burst or default_burst(rate)
        self._lock = asyncio.Lock()  # one waiter per process; the row lock orders the processes

    async def take(self, most: int = 1) -> int:
        async with self._lock:
            taken, wait = await self._reserve(most)
            if wait > 0:
                await asyncio.sleep(wait)
                await self._sit_out_a_pause()  # a 429 that another worker saw meanwhile holds this token too
            return taken

    async def _sit_out_a_pause(self) -> None:
        async def paused_for(conn: Connection) -> tuple[float] | None:
            cursor = await conn.execute(
                "SELECT paused_until - extract(epoch FROM clock_timestamp())::float8 FROM rate_limits "
                "WHERE api_url = %(api_url)s",
                {"api_url": self.api_url},
            )
            return await cursor.fetchone()

        row = await self._db.run(paused_for)
        if row is not None and float(row[0]) > 0:
            await asyncio.sleep(float(row[0]))

    async def _reserve(self, most: int) -> tuple[int, float]:
        """Take what is there (up to `most`), or the next token due: (taken, seconds until it may be used)."""
        params = {"api_url": self.api_url, "burst": self.burst}
        return await self._db.run(lambda conn: self._reserve_on(conn, most, params))

    async def _reserve_on(self, conn: Connection, most: int, params: dict[str, object]) -> tuple[int, float]:
        async with conn.transaction():
            cursor = await conn.execute(
                "INSERT INTO rate_limits AS r "
                "VALUES (%(api_url)s, %(burst)s, extract(epoch FROM clock_timestamp()), 0) "
                "ON CONFLICT (api_url) DO UPDATE SET api_url = r.api_url "
                "RETURNING r.tokens, r.updated_at, r.paused_until, extract(epoch FROM clock_timestamp())::float8",
                params,
            )
            row = await cursor.fetchone()
            assert row is not None
            tokens, updated_at, paused_until, now = (float(value) for value in row)
            start = max(now, updated_at, paused_until)  # nothing refills during a 429 pause
            tokens = refill(tokens, now - max(updated_at, paused_until), rate=self.rate, burst=self.burst)
            taken = min(most, int(tokens)) if tokens >= 1 else 1
            wait = start - now + (0.0 if tokens >= 1 else (1 - tokens) / self.rate)
            await conn.execute(
                "UPDATE rate_limits SET tokens = %(tokens)s, updated_at = %(at)s WHERE api_url = %(api_url)s",
                {"tokens": tokens - taken, "at": max(now, updated_at), "api_url": self.api_url},
            )
        return taken, wait

    async def give_back(self, count: int) -> None:
        if count <= 0:
            return
        await self._execute(
            "UPDATE rate_limits SET tokens = LEAST(%(burst)s, tokens + %(count)s) WHERE api_url = %(api_url)s",
            {"burst": self.burst, "count": count, "api_url": self.api_url},
        )

    async def pause(self, seconds: float) -> None:
        await self._execute(
            "UPDATE rate_limits SET tokens = LEAST(tokens, 0), paused_until = GREATEST(paused_until, "
            "extract(epoch FROM clock_timestamp()) + %(seconds)s) WHERE api_url = %(api_url)s",
            {"seconds": seconds, "api_url": self.api_url},
        )

    async def _execute(self, sql: str, params: dict[str, object]) -> None:
        async def execute(conn: Connection) -> None:
            await conn.execute(sql, params)

        await self._db.run(execute)
