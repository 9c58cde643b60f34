"""At most one call of a coroutine in flight: while it runs, every caller gets that same call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class OneAtATime(Generic[T]):
    def __init__(self) -> None:
        self._call: asyncio.Task[T] | None = None

    def start(self, work: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
        """The call in flight, or `work()` started now when none is."""
        if self._call is None or self._call.done():
            self._call = asyncio.create_task(work())
            self._call.add_done_callback(lambda done: done.cancelled() or done.exception())  # seen: no warning
        return self._call

    async def run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Wait for the call in flight (or a new one); a caller that gives up does not cancel it."""
        return await asyncio.shield(self.start(work))
