"""Group commit: while one batch of writes holds the store, the next one gathers, so a burst of N writes
from one process costs a few transactions rather than N lock hand-overs (the settles of many generates
answered at once). A batch that fails is written again one by one, so each caller learns its own fate,
unless the store did not answer at all (then no item would fare better alone)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from ...domain.errors import StoreUnavailableError

Item = TypeVar("Item")


class GroupCommit(Generic[Item]):
    def __init__(
        self, write_batch: Callable[[list[Item]], Awaitable[None]], write_one: Callable[[Item], Awaitable[None]]
    ) -> None:
        self._write_batch = write_batch
        self._write_one = write_one
        self._waiting: list[tuple[Item, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def write(self, item: Item) -> None:
        """Written when this returns; raises what writing it raised. A caller cancelled meanwhile does not
        take its item back: it is written all the same (a settle must land)."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        await asyncio.shield(done)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._write_batch([item for item, _ in batch])
                except StoreUnavailableError as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                except Exception:
                    for item, done in batch:
                        await self._one(item, done)
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._drainer = None

    async def _one(self, item: Item, done: asyncio.Future[None]) -> None:
        try:
            await self._write_one(item)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
        else:
            if not done.done():
                done.set_result(None)
