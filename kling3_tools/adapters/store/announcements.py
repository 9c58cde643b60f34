"""Announcements: a short topic (a resource's URI) told to every process listening on the store, so a client
subscribed on one MCP replica hears of a change a poller made on another. PostgreSQL carries them with
NOTIFY/LISTEN; a SQLite store has one process to tell, itself."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pg_connections import Connections

CHANNEL = "kling3_updates"
MAX_TOPIC = 7000  # NOTIFY's payload is at most 8000 bytes


class LocalAnnouncements:
    _heard_by: list[Callable[[str], None]]

    async def announce(self, topic: str) -> None:
        for heard in list(getattr(self, "_heard_by", [])):
            heard(topic)

    @contextlib.asynccontextmanager
    async def watch_announcements(self, heard: Callable[[str], None]) -> AsyncIterator[None]:
        if not hasattr(self, "_heard_by"):
            self._heard_by = []
        self._heard_by.append(heard)
        try:
            yield
        finally:
            self._heard_by.remove(heard)


class PostgresAnnouncements:
    _db: Connections

    async def announce(self, topic: str) -> None:
        async def notify(conn: object) -> None:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, topic[:MAX_TOPIC]))  # type: ignore[attr-defined]

        await self._db.run(notify)

    def watch_announcements(self, heard: Callable[[str], None]) -> contextlib.AbstractAsyncContextManager[None]:
        def payload(topic: str | None) -> None:
            if topic is not None:  # None: listening again after a lost connection
                heard(topic)

        return self._db.listening(CHANNEL, payload)
