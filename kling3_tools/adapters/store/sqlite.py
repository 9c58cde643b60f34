"""The task store on one SQLite file: WAL mode with a busy timeout, so the bot, the MCP server, the CLI and
standalone pollers on one machine can share it; reservations under `BEGIN IMMEDIATE`.

Calls run in a worker thread on one connection, except the reads one index answers in microseconds (a task,
an attempt, a scope's spend in credits): those run on the event loop, on a second, read-only connection that
never waits. Handing a call to a thread and back costs about ten times such a read (75 µs against 8 on a
2-core machine), and in WAL mode a reader does not wait for writers; should the file be busy all the same
(another process recovering it after a crash), the read goes to the worker thread and waits there."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...domain.errors import StoreError, TaskExistsError
from ...domain.ledger import DAY_SECONDS, Attempt, AttemptState, SpendLimit, Usage
from ...domain.models import StatusFilter
from ...domain.records import TaskRecord
from ...domain.reservations import Reservation, ReservationQueue, decide
from ...domain.story_record import StoryRecord
from ..ratelimit import RateLimiter, TokenBucket
from .announcements import LocalAnnouncements
from .group_commit import GroupCommit
from .kept_ids import KeptTaskIds
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
from .sqlite_schema import SQLITE, create, prepare
from .stats import StatsQueries
from .story_rows import STORY_COLUMNS, StoryTable, story_to_row

SETTLED = "UPDATE attempts SET state = 'submitted', task_id = ? WHERE attempt_id = ?"


class SQLiteTaskStore(
    KeptTaskIds,
    TaskUpdates,
    StoryTable,
    StatsQueries,
    SideTables,
    LocalAnnouncements,
):
    """`TaskStore` on one SQLite file: a connection for the worker thread, and one for quick reads."""

    _dialect = SQLITE

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            create(self.path)
        if self.path.stat().st_size == 0:  # SQLite would take it for a new, empty store
            raise StoreError(
                f"The task store {self.path} is an empty file (0 bytes): it was probably truncated, and its tasks "
                "are gone. Restore it from a backup, or delete it to start a new store."
            )
        self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        self._db.row_factory = _dict_row
        self._lock = threading.Lock()
        self._limiters: dict[str, TokenBucket] = {}
        self._reservations = ReservationQueue(self._reserve_batch, self._abandon)
        self._settles = GroupCommit(self._settle_batch, self._settle_one)
        try:
            with self._lock:
                prepare(self._db, deadline=time.monotonic() + busy_timeout)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StoreError(f"The task store {self.path} is locked by another process ({exc}).") from None
            raise StoreError(
                f"The task store {self.path} is not a usable SQLite file ({exc}); it was left untouched. "
                "Restore it from a backup, or move it aside to start a new store."
            ) from None
        self._reader = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        self._reader.row_factory = _dict_row
        self._reader.execute("PRAGMA query_only = ON")

    def __repr__(self) -> str:
        return f"SQLiteTaskStore({str(self.path)!r})"

    async def _run(self, sql_work: Any, *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                return sql_work(*args)

        return await asyncio.to_thread(locked)

    def _transaction(self, work: Any) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = work()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result

    async def _fetch(self, sql: str, params: dict[str, Any], *, write: bool = False) -> list[dict[str, Any]]:
        if write:
            rows: list[dict[str, Any]] = await self._run(
                lambda: self._transaction(lambda: self._db.execute(sql, params).fetchall())
            )
            return rows
        return await self._run(lambda: self._db.execute(sql, params).fetchall())  # type: ignore[no-any-return]

    async def _read_at_once(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[dict[str, Any]]:
        """The rows of a read that one index answers, read on the event loop (see the module's doc)."""
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):  # extended codes too
                raise
        return await self._run(lambda: self._db.execute(sql, params).fetchall())  # type: ignore[no-any-return]

    async def _write(self, sql: str, params: dict[str, Any]) -> int:
        cursor = await self._run(lambda: self._transaction(lambda: self._db.execute(sql, params)))
        return int(cursor.rowcount)

    # --- the interface --------------------------------------------------------

    async def check_schema(self) -> None:
        await self._fetch("SELECT COUNT(*) FROM tasks WHERE 0", {})  # readable, and its tables are there

    async def add(self, record: TaskRecord) -> None:
        values = record_to_row(record)
        sql = SQLITE.insert("tasks", COLUMNS)
        try:
            await self._run(lambda: self._transaction(lambda: self._db.execute(sql, values)))
        except sqlite3.IntegrityError as exc:
            raise TaskExistsError(f"task {record.task_id} is already recorded") from exc

    async def get(self, task_id: str) -> TaskRecord | None:
        rows = await self._read_at_once("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return record_from_row(rows[0]) if rows else None

    async def save(self, record: TaskRecord, *, owner: str | None = None) -> bool:
        values = record_to_row(record)
        assignments = ", ".join(f"{c} = :{c}" for c in MUTABLE_COLUMNS)
        if owner is None:
            sql = f"UPDATE tasks SET {assignments} WHERE task_id = :task_id"
        else:
            values["owner"] = owner
            sql = (
                f"UPDATE tasks SET {assignments}, lease_owner = NULL, lease_until = NULL "
                "WHERE task_id = :task_id AND lease_owner = :owner"
            )
        cursor = await self._run(lambda: self._transaction(lambda: self._db.execute(sql, values)))
        return bool(cursor.rowcount)

    async def save_progress(self, record: TaskRecord) -> bool:
        values = record_to_row(record)
        assignments = ", ".join(f"{c} = :{c}" for c in progress_columns(record))
        sql = f"UPDATE tasks SET {assignments} WHERE task_id = :task_id AND outcome IS NULL"
        cursor = await self._run(lambda: self._transaction(lambda: self._db.execute(sql, values)))
        return bool(cursor.rowcount)

    async def claim(
        self, *, owner: str, now: float, lease_seconds: float, limit: int, api_url: str, kinds: list[str]
    ) -> list[TaskRecord]:
        marks = ", ".join("?" for _ in kinds)
        select = (
            f"SELECT task_id FROM tasks WHERE due_at <= ? AND api_url = ? AND origin_kind IN ({marks}) "
            "AND (lease_until IS NULL OR lease_until < ?) ORDER BY due_at LIMIT ?"
        )

        def work() -> list[dict[str, Any]]:
            ids = [r["task_id"] for r in self._db.execute(select, (now, api_url, *kinds, now, limit))]
            if not ids:
                return []
            id_marks = ", ".join("?" for _ in ids)
            self._db.execute(
                f"UPDATE tasks SET lease_owner = ?, lease_until = ? WHERE task_id IN ({id_marks})",
                (owner, now + lease_seconds, *ids),
            )
            return list(self._db.execute(f"SELECT * FROM tasks WHERE task_id IN ({id_marks}) ORDER BY due_at", ids))

        rows = await self._run(lambda: self._transaction(work))
        return [record_from_row(row) for row in rows]

    async def renew(self, task_id: str, *, owner: str, until: float) -> bool:
        sql = "UPDATE tasks SET lease_until = ? WHERE task_id = ? AND lease_owner = ?"
        cursor = await self._run(lambda: self._transaction(lambda: self._db.execute(sql, (until, task_id, owner))))
        return bool(cursor.rowcount)

    async def release_all(self, *, owner: str) -> int:
        statements = [
            f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?"
            for table in ("tasks", "stories")
        ]
        counts = await self._run(
            lambda: self._transaction(lambda: [self._db.execute(sql, (owner,)).rowcount for sql in statements])
        )
        return int(sum(counts))

    async def next_due(self, *, api_url: str, kinds: list[str]) -> float | None:
        marks = ", ".join("?" for _ in kinds)
        sql = (
            "SELECT MIN(CASE WHEN lease_until IS NULL OR lease_until < due_at THEN due_at ELSE lease_until END) AS due "
            f"FROM tasks WHERE due_at IS NOT NULL AND api_url = ? AND origin_kind IN ({marks})"
        )
        row = await self._run(lambda: self._db.execute(sql, (api_url, *kinds)).fetchone())
        return None if row["due"] is None else float(row["due"])

    async def recent(
        self,
        *,
        status: StatusFilter | None = None,
        origin_kind: str | None = None,
        user_id: int | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> list[TaskRecord]:
        sql, params = SQLITE.recent(status=status, origin_kind=origin_kind, user_id=user_id, owner=owner, limit=limit)
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
        return [record_from_row(row) for row in rows]

    async def completion_times(self, type_: str, duration: int | None, *, limit: int = 200) -> list[float]:
        sql = (
            "SELECT finished_at - submitted_at AS took FROM tasks WHERE outcome = 'succeeded' AND type = ? "
            "AND duration IS ? ORDER BY finished_at DESC LIMIT ?"
        )
        rows = await self._run(lambda: self._db.execute(sql, (type_, duration, limit)).fetchall())
        return [float(row["took"]) for row in rows]

    async def credits_by_user(self, since: float, *, origin_kind: str) -> dict[int, int]:
        sql, params = SQLITE.credits_by_user(since, origin_kind=origin_kind)
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
        return {int(row["user_id"]): int(row["credits"]) for row in rows if row["user_id"] is not None}

    def _usage(self, limit: SpendLimit, now: float) -> Usage:
        sql, params = SQLITE.usage(limit, now - DAY_SECONDS)
        return usage_from_row(self._db.execute(sql, params).fetchone())

    async def reserve(self, attempt: Attempt, limits: Sequence[SpendLimit]) -> None:
        await self._reservations.reserve([attempt], limits)

    async def reserve_story(
        self, story: StoryRecord | None, attempts: Sequence[Attempt], limits: Sequence[SpendLimit]
    ) -> None:
        await self._reservations.reserve(attempts, limits, story)

    async def _abandon(self, attempt: Attempt) -> bool:
        return await self.close_attempt(attempt.attempt_id, AttemptState.RELEASED, "cancelled before it was sent")

    async def _reserve_batch(self, batch: list[Reservation]) -> None:
        insert = SQLITE.insert("attempts", ATTEMPT_COLUMNS)

        def work() -> None:  # under BEGIN IMMEDIATE: one writer at a time across every process on the file
            for attempt in (attempt for reservation in batch for attempt in reservation.attempts):
                stamp(attempt)
            now = batch[-1].attempts[0].created_at
            accepted = decide(batch, lambda limit: self._usage(limit, now))
            self._db.executemany(insert, [attempt_to_row(a) for reservation in accepted for a in reservation.attempts])
            stories = [story_to_row(reservation.story) for reservation in accepted if reservation.story is not None]
            self._db.executemany(SQLITE.insert("stories", STORY_COLUMNS), stories)

        await self._run(lambda: self._transaction(work))

    async def settle(self, attempt_id: str, record: TaskRecord) -> None:
        await self._settles.write((attempt_id, record))

    async def _settle_batch(self, batch: list[tuple[str, TaskRecord]]) -> None:
        def work() -> None:
            self._db.executemany(SQLITE.insert("tasks", COLUMNS), [record_to_row(record) for _, record in batch])
            self._db.executemany(SETTLED, [(record.task_id, attempt_id) for attempt_id, record in batch])

        await self._run(lambda: self._transaction(work))

    async def _settle_one(self, settle: tuple[str, TaskRecord]) -> None:
        try:
            await self._settle_batch([settle])
        except sqlite3.IntegrityError as exc:
            raise TaskExistsError(f"task {settle[1].task_id} is already recorded") from exc

    async def close_attempt(self, attempt_id: str, state: AttemptState, note: str) -> bool:
        sql = f"UPDATE attempts SET state = ?, note = ? WHERE attempt_id = ? AND {OPEN_ATTEMPT}"
        cursor = await self._run(lambda: self._transaction(lambda: self._db.execute(sql, (state, note, attempt_id))))
        return bool(cursor.rowcount)

    async def get_attempt(self, attempt_id: str) -> Attempt | None:
        sql = "SELECT * FROM attempts WHERE attempt_id = ?"
        rows = await self._read_at_once(sql, (attempt_id,))
        return attempt_from_row(rows[0]) if rows else None

    async def attempts(self, *, open_only: bool = True, limit: int = 50) -> list[Attempt]:
        sql, params = SQLITE.attempts(open_only=open_only, limit=limit)
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
        return [attempt_from_row(row) for row in rows]

    async def usage(self, limit: SpendLimit) -> Usage:
        sql, params = SQLITE.usage(limit, time.time() - DAY_SECONDS, credits=True)
        if limit.max_running or limit.cooldown_seconds:  # these read every running task, every attempt of a scope
            return usage_from_row(await self._run(lambda: self._db.execute(sql, params).fetchone()))
        return usage_from_row((await self._read_at_once(sql, params))[0])

    def rate_limiter(self, api_url: str, rate: float, burst: float | None = None) -> RateLimiter:
        """Per process: pollers in separate processes on one file split the rate (`kling3 poller --workers`)."""
        if api_url not in self._limiters:
            self._limiters[api_url] = TokenBucket(rate, burst)
        return self._limiters[api_url]

    def watch_new_tasks(self, wake: Callable[[], None]) -> contextlib.AbstractAsyncContextManager[None]:
        """SQLite cannot tell other processes; they find new tasks at their next sweep."""
        return contextlib.nullcontext()

    async def prune(self, before: float) -> tuple[int, int]:
        statements = SQLITE.prune(before)
        tasks, attempts, *_ = await self._run(
            lambda: self._transaction(lambda: [self._db.execute(*s).rowcount for s in statements])
        )
        return tasks, attempts

    async def close(self) -> None:
        self._reader.close()
        await self._run(self._db.close)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}
