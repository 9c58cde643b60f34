"""The request budget of every worker on one PostgreSQL store: a token bucket kept in a `rate_limits` row."""

from __future__ import annotations

import asyncio

from psycopg_pool import AsyncConnectionPool

from ..ratelimit import default_burst, refill
from .pg_schema import Connection

Pool = AsyncConnectionPool[Connection]


class PostgresRateLimiter:
    """A token bucket kept in a `rate_limits` row, on the database's clock, shared by every worker."""

    def __init__(self, pool: Pool, api_url: str, rate: float) -> None:
        self._pool = pool
        self.api_url = api_url
        self.rate = rate
        self.burst = default_burst(rate)
        self._lock = asyncio.Lock()  # one waiter per process; the row lock orders the processes

    async def take(self, most: int = 1) -> int:
        async with self._lock:
            while True:
                taken, wait = await self._try_take(most)
                if taken:
                    return taken
                await asyncio.sleep(wait)

    async def _try_take(self, most: int) -> tuple[int, float]:
        params = {"api_url": self.api_url, "burst": self.burst}
        async with self._pool.connection() as conn, conn.transaction():
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
            if now < paused_until:
                return 0, paused_until - now
            tokens = refill(tokens, now - updated_at, rate=self.rate, burst=self.burst)
            taken = min(most, int(tokens)) if tokens >= 1 else 0
            await conn.execute(
                "UPDATE rate_limits SET tokens = %(tokens)s, updated_at = %(now)s WHERE api_url = %(api_url)s",
                {"tokens": tokens - taken, "now": now, "api_url": self.api_url},
            )
        return taken, (1 - tokens) / self.rate

    async def give_back(self, count: int) -> None:
        if count <= 0:
            return
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE rate_limits SET tokens = LEAST(%(burst)s, tokens + %(count)s) WHERE api_url = %(api_url)s",
                {"burst": self.burst, "count": count, "api_url": self.api_url},
            )

    async def pause(self, seconds: float) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE rate_limits SET tokens = 0, paused_until = GREATEST(paused_until, "
                "extract(epoch FROM clock_timestamp()) + %(seconds)s) WHERE api_url = %(api_url)s",
                {"seconds": seconds, "api_url": self.api_url},
            )
