"""The poller's budget of API requests: a token bucket that a 429 pauses for everyone who shares it.

`TokenBucket` is shared by the tasks of one process. Several processes share
one budget through the store (`TaskStore.rate_limiter`): the PostgreSQL store
keeps the bucket in a row, so N workers on N machines still send at most
`rate` requests per second in all, and a 429 seen by one pauses them all.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class RateLimiter(Protocol):
    async def take(self, most: int = 1) -> int:
        """Wait for at least one token, then take up to `most` of those available."""

    async def give_back(self, count: int) -> None:
        """Return tokens taken but not spent."""

    async def pause(self, seconds: float) -> None:
        """Nobody sharing this limiter sends anything for `seconds` (the API said 429)."""


def refill(tokens: float, elapsed: float, *, rate: float, burst: float) -> float:
    return min(burst, tokens + max(elapsed, 0.0) * rate)


def default_burst(rate: float) -> float:
    """A tenth of a second of requests (at least one): after an idle spell the first second sends at most
    1.1 × the rate, which a strict API's per-second window allows."""
    return max(1.0, rate / 10)


class TokenBucket:
    """`rate` acquisitions per second with bursts up to `burst`, within one process."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else default_burst(rate)
        self._tokens = self.burst
        self._updated = time.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    async def take(self, most: int = 1) -> int:
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._tokens = refill(self._tokens, now - self._updated, rate=self.rate, burst=self.burst)
                self._updated = now
                if self._tokens >= 1:
                    taken = min(most, int(self._tokens))
                    self._tokens -= taken
                    return taken
                await asyncio.sleep((1 - self._tokens) / self.rate)

    async def give_back(self, count: int) -> None:
        self._tokens = min(self.burst, self._tokens + count)

    async def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        self._tokens = 0.0
