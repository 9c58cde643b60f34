"""The task store on PostgreSQL, for any number of poller workers on any number of machines.

Same contract as the SQLite store. Workers claim due tasks with
`SELECT … FOR UPDATE SKIP LOCKED` under a lease that expires, so a dead
worker's tasks go to the others; `add` sends a NOTIFY in the same statement,
which wakes idle workers at once; the request budget is a row
(`rate_limits`), so it holds across workers. The schema is versioned in
`kling3_schema` and changed only by `migrate()` (`kling3 store migrate`).

Times are seconds since the epoch from each worker's clock, as in SQLite:
keep the workers' clocks synchronised (NTP), as with any lease.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader

from ...domain.errors import StoreError, TaskExistsError
from ...domain.ledger import DAY_SECONDS, Attempt, AttemptState, SpendLimit, Usage
from ...domain.models import StatusFilter
from ...domain.records import TaskRecord
from ...domain.reservations import Reservation, ReservationQueue, decide
from ...domain.story_record import StoryRecord
from ..ratelimit import RateLimiter
from .announcements import PostgresAnnouncements
from .group_commit import GroupCommit
from .kept_ids import KeptTaskIds
from .pg_connections import (
    PATIENCE_SECONDS,
    RECORD_PATIENCE_SECONDS,
    Connections,
)
from .pg_queries import ATTEMPT_EXISTS, CLAIM_SQL, NEXT_DUE_SQL, POSTGRES, SETTLED_AS
from .pg_ratelimit import PostgresRateLimiter
from .pg_schema import SCHEMA_VERSION, Connection, connect, current_version, describe_url, too_new
from .rows import (
    ATTEMPT_COLUMNS,
    COLUMNS,
    MUTABLE_COLUMNS,
    OPEN_ATTEMPT,
    TaskUpdates,
    attempt_from_row,
    attempt_to_row,
    progress_columns,
    record_from_row,
    record_to_row,
    stamp,
    usage_from_row,
)
from .side_tables import SideTables
from .stats import StatsQueries
from .story_rows import STORY_COLUMNS, StoryTable, story_to_row

log = logging.getLogger("kling3_tools.store")

NEW_TASK_CHANNEL = "kling3_new_task"
_JSON_COLUMNS = {"request", "video_urls", "origin"}  # in tasks and attempts


def _check_version(version: int, url: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(too_new(version))
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"the task store at {describe_url(url)} has schema version {version}, this kling3-tools needs "
            f"{SCHEMA_VERSION}: run `kling3 store migrate` once (it is safe to run again)"
        )


async def _configure(conn: Connection) -> None:
    conn.adapters.register_loader("jsonb", TextLoader)  # JSON columns come back as text, as from SQLite


class PostgresTaskStore(
    KeptTaskIds,
    TaskUpdates,
    StoryTable,
    StatsQueries,
    SideTables,
    PostgresAnnouncements,
):
    """`TaskStore` on PostgreSQL through one pool of connections per process."""

    _dialect = POSTGRES

    def __init__(self, url: str, connections: Connections) -> None:
        self.url = url
        self._db = connections
        self._limiters: dict[str, PostgresRateLimiter] = {}
        self._reservations = ReservationQueue(self._reserve_batch, self._abandon)
        self._settles = GroupCommit(self._settle_batch, self._settle_one)

    def __repr__(self) -> str:
        return f"PostgresTaskStore({describe_url(self.url)!r})"

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10) -> PostgresTaskStore:
        """Connect and check the schema; a schema that is missing or behind asks for `kling3 store migrate`."""
        async with await connect(url) as conn:
            _check_version(await current_version(conn), url)
        return cls(url, await Connections.open(url, pool_size=pool_size, configure=_configure))

    async def check_schema(self) -> None:
        async def check(conn: Connection) -> None:
            _check_version(await current_version(conn), self.url)

        await self._db.run(check)

    async def _rows(
        self, sql: str, params: dict[str, Any], *, patience: float = PATIENCE_SECONDS
    ) -> list[dict[str, Any]]:
        async def rows(conn: Connection) -> list[dict[str, Any]]:
            async with conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(sql, params)
                return await cursor.fetchall()

        return await self._db.run(rows, patience=patience)

    async def _count(self, sql: str, params: dict[str, Any], *, patience: float = PATIENCE_SECONDS) -> int:
        async def count(conn: Connection) -> int:
            return (await conn.execute(sql, params)).rowcount

        return await self._db.run(count, patience=patience)

    async def _fetch(self, sql: str, params: dict[str, Any], *, write: bool = False) -> list[dict[str, Any]]:
        return await self._rows(sql, params)  # autocommit: one statement is its own transaction

    async def _write(self, sql: str, params: dict[str, Any]) -> int:
        return await self._count(sql, params)

    @staticmethod
    def _placeholder(column: str) -> str:
        return f"%({column})s::jsonb" if column in _JSON_COLUMNS else f"%({column})s"

    def _assignments(self, columns: list[str]) -> str:
        return ", ".join(f"{c} = {self._placeholder(c)}" for c in columns)

    async def add(self, record: TaskRecord) -> None:
        await self._insert_task(record, attempt_id=None)

    def _insert_task_sql(self) -> str:
        """One statement, so one round trip and atomic: the task in, its attempt (if any) marked
        `submitted`, and a NOTIFY that wakes idle workers."""
        return (
            f"WITH added AS (INSERT INTO tasks ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join(self._placeholder(c) for c in COLUMNS)}) RETURNING api_url), "
            "settled AS (UPDATE attempts SET state = 'submitted', task_id = %(task_id)s "
            "WHERE attempt_id = %(attempt_id)s) "
            "SELECT pg_notify(%(channel)s, api_url) FROM added"
        )

    @staticmethod
    def _insert_task_params(record: TaskRecord, attempt_id: str | None) -> dict[str, Any]:
        return {**record_to_row(record), "channel": NEW_TASK_CHANNEL, "attempt_id": attempt_id}

    async def _insert_task(
        self, record: TaskRecord, *, attempt_id: str | None, patience: float = PATIENCE_SECONDS
    ) -> None:
        try:
            await self._count(self._insert_task_sql(), self._insert_task_params(record, attempt_id), patience=patience)
        except psycopg.errors.UniqueViolation as exc:
            raise TaskExistsError(f"task {record.task_id} is already recorded") from exc

    async def _settle_batch(self, batch: list[tuple[str, TaskRecord]]) -> None:
        # In time order: each task's insert locks the `spend_hours` rows of its hour, so two batches that straddle
        # an hour must take them in one order, or they deadlock.
        in_order = sorted(batch, key=lambda settle: settle[1].submitted_at)
        rows = [self._insert_task_params(record, attempt_id) for attempt_id, record in in_order]

        async def insert(conn: Connection) -> None:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(self._insert_task_sql(), rows)

        await self._db.run(insert, patience=RECORD_PATIENCE_SECONDS)

    async def _settle_one(self, settle: tuple[str, TaskRecord]) -> None:
        """Idempotent: a try whose commit landed but whose answer was lost is found settled by the next."""
        attempt_id, record = settle
        try:
            await self._insert_task(record, attempt_id=attempt_id, patience=RECORD_PATIENCE_SECONDS)
        except TaskExistsError:
            settled = {"attempt_id": attempt_id, "task_id": record.task_id}
            if not await self._rows(SETTLED_AS, settled, patience=RECORD_PATIENCE_SECONDS):
                raise

    async def get(self, task_id: str) -> TaskRecord | None:
        rows = await self._rows("SELECT * FROM tasks WHERE task_id = %(task_id)s", {"task_id": task_id})
        return record_from_row(rows[0]) if rows else None

    async def save(self, record: TaskRecord, *, owner: str | None = None) -> bool:
        values = record_to_row(record)
        sql = f"UPDATE tasks SET {self._assignments(MUTABLE_COLUMNS)}"
        if owner is None:
            sql += " WHERE task_id = %(task_id)s"
        else:
            # The claim's lease and this write are one statement: a worker that lost its lease writes nothing.
            sql += ", lease_owner = NULL, lease_until = NULL WHERE task_id = %(task_id)s AND lease_owner = %(owner)s"
        return bool(await self._count(sql, {**values, "owner": owner}))

    async def save_progress(self, record: TaskRecord) -> bool:
        sql = (
            f"UPDATE tasks SET {self._assignments(progress_columns(record))} "
            "WHERE task_id = %(task_id)s AND outcome IS NULL"
        )
        return bool(await self._count(sql, record_to_row(record)))

    async def claim(
        self, *, owner: str, now: float, lease_seconds: float, limit: int, api_url: str, kinds: list[str]
    ) -> list[TaskRecord]:
        params = {"api_url": api_url, "now": now, "kinds": kinds, "limit": limit, "owner": owner}
        rows = await self._rows(CLAIM_SQL, {**params, "until": now + lease_seconds})
        return sorted((record_from_row(row) for row in rows), key=lambda r: r.due_at or 0.0)

    async def renew(self, task_id: str, *, owner: str, until: float) -> bool:
        sql = "UPDATE tasks SET lease_until = %(until)s WHERE task_id = %(task_id)s AND lease_owner = %(owner)s"
        return bool(await self._count(sql, {"until": until, "task_id": task_id, "owner": owner}))

    async def release_all(self, *, owner: str) -> int:
        sql = "UPDATE {} SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = %(owner)s"
        return sum([await self._count(sql.format(table), {"owner": owner}) for table in ("tasks", "stories")])

    async def next_due(self, *, api_url: str, kinds: list[str]) -> float | None:
        rows = await self._rows(NEXT_DUE_SQL, {"api_url": api_url, "kinds": kinds})
        due = rows[0]["due"]
        return None if due is None else float(due)

    async def recent(
        self,
        *,
        status: StatusFilter | None = None,
        origin_kind: str | None = None,
        user_id: int | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> list[TaskRecord]:
        sql, params = POSTGRES.recent(status=status, origin_kind=origin_kind, user_id=user_id, owner=owner, limit=limit)
        return [record_from_row(row) for row in await self._rows(sql, params)]

    async def completion_times(self, type_: str, duration: int | None, *, limit: int = 200) -> list[float]:
        sql = (
            "SELECT finished_at - submitted_at AS took FROM tasks WHERE outcome = 'succeeded' AND type = %(type)s "
            "AND duration IS NOT DISTINCT FROM %(duration)s ORDER BY finished_at DESC LIMIT %(limit)s"
        )
        rows = await self._rows(sql, {"type": type_, "duration": duration, "limit": limit})
        return [float(row["took"]) for row in rows]

    async def credits_by_user(self, since: float, *, origin_kind: str) -> dict[int, int]:
        rows = await self._rows(*POSTGRES.credits_by_user(since, origin_kind=origin_kind))
        return {int(row["user_id"]): int(row["credits"]) for row in rows if row["user_id"] is not None}

    def _insert(self, table: str, columns: list[str]) -> str:
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(self._placeholder(c) for c in columns)})"

    async def reserve(self, attempt: Attempt, limits: Sequence[SpendLimit]) -> None:
        await self._reservations.reserve([attempt], limits)

    async def reserve_story(
        self, story: StoryRecord | None, attempts: Sequence[Attempt], limits: Sequence[SpendLimit]
    ) -> None:
        await self._reservations.reserve(attempts, limits, story)

    async def _abandon(self, attempt: Attempt) -> bool:
        return await self.close_attempt(attempt.attempt_id, AttemptState.RELEASED, "cancelled before it was sent")

    async def _reserve_batch(self, batch: list[Reservation]) -> None:
        # One advisory lock per scope whose usage is checked, taken in one order: batches that share a scope
        # queue on it. Locks and usage go as one pipeline; the server runs them in order, so under READ
        # COMMITTED each usage statement takes its snapshot after the locks are held.
        counted = list(dict.fromkeys(limit for r in batch for limit in r.limits if limit.counts_usage))
        for attempt in (attempt for reservation in batch for attempt in reservation.attempts):
            stamp(attempt)
        since = batch[0].attempts[0].created_at - DAY_SECONDS
        written: list[str] = []  # what the last try wrote, which may have committed before its answer was lost

        async def reserve(conn: Connection) -> None:
            if written and await (await conn.execute(ATTEMPT_EXISTS, {"id": written[0]})).fetchone():
                return  # it did: its decisions stand
            for reservation in batch:
                reservation.refused = None
            async with conn.pipeline(), conn.transaction():
                for key in sorted({limit.scope.key for limit in counted}):
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
                cursors = [await conn.cursor(row_factory=dict_row).execute(*POSTGRES.usage(c, since)) for c in counted]
                usages = {
                    limit: usage_from_row(await cursor.fetchone() or {})
                    for limit, cursor in zip(counted, cursors, strict=True)
                }
                accepted = decide(batch, usages.__getitem__)
                attempts = [attempt for reservation in accepted for attempt in reservation.attempts]
                written[:] = [attempt.attempt_id for attempt in attempts]
                if accepted:
                    async with conn.cursor() as cursor:
                        insert = self._insert("attempts", ATTEMPT_COLUMNS)
                        await cursor.executemany(insert, [attempt_to_row(attempt) for attempt in attempts])
                        stories = [story_to_row(r.story) for r in accepted if r.story is not None]
                        if stories:
                            await cursor.executemany(self._insert("stories", STORY_COLUMNS), stories)

        await self._db.run(reserve)

    async def settle(self, attempt_id: str, record: TaskRecord) -> None:
        await self._settles.write((attempt_id, record))

    async def close_attempt(self, attempt_id: str, state: AttemptState, note: str) -> bool:
        sql = (
            "UPDATE attempts SET state = %(state)s, note = %(note)s "
            f"WHERE attempt_id = %(attempt_id)s AND {OPEN_ATTEMPT}"
        )
        return bool(await self._count(sql, {"state": state.value, "note": note, "attempt_id": attempt_id}))

    async def get_attempt(self, attempt_id: str) -> Attempt | None:
        rows = await self._rows("SELECT * FROM attempts WHERE attempt_id = %(id)s", {"id": attempt_id})
        return attempt_from_row(rows[0]) if rows else None

    async def attempts(self, *, open_only: bool = True, limit: int = 50) -> list[Attempt]:
        return [attempt_from_row(row) for row in await self._rows(*POSTGRES.attempts(open_only=open_only, limit=limit))]

    async def usage(self, limit: SpendLimit) -> Usage:
        rows = await self._rows(*POSTGRES.usage(limit, time.time() - DAY_SECONDS, credits=True))
        return usage_from_row(rows[0])

    def rate_limiter(self, api_url: str, rate: float, burst: float | None = None) -> RateLimiter:
        if api_url not in self._limiters:
            self._limiters[api_url] = PostgresRateLimiter(self._db, api_url, rate, burst)
        return self._limiters[api_url]

    def watch_new_tasks(self, wake: Callable[[], None]) -> contextlib.AbstractAsyncContextManager[None]:
        return self._db.listening(NEW_TASK_CHANNEL, lambda _: wake())

    async def prune(self, before: float) -> tuple[int, int]:
        async def prune(conn: Connection) -> tuple[int, int]:
            async with conn.transaction():
                counts = [(await conn.execute(*statement)).rowcount for statement in POSTGRES.prune(before)]
            return counts[0], counts[1]

        return await self._db.run(prune)

    async def close(self) -> None:
        await self._db.close()
