"""The persistent task store: a typed interface and its SQLite backend (PostgreSQL: `pg_store`).

Every task any front end submits is written here the moment the API returns
its id, before anything else happens. One column, `due_at`, says when the task
next needs work (a status check while it runs, a delivery once it ended);
pollers claim due tasks under a lease so two of them never work on one task at
once. SQLite runs in WAL mode with a busy timeout, so the bot, the MCP server,
the CLI and standalone pollers on one machine can share one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

import platformdirs
from pydantic import TypeAdapter

from .errors import StoreError, TaskExistsError, install_hint
from .ledger import (
    DAY_SECONDS,
    Attempt,
    AttemptState,
    Reservation,
    ReservationQueue,
    Scope,
    SpendLimit,
    Usage,
    decide,
)
from .ratelimit import RateLimiter, TokenBucket
from .records import Delivery, Origin, Outcome, TaskRecord

_ORIGIN = TypeAdapter[Origin](Origin)

StatusFilter = Literal["running", "succeeded", "failed", "timed_out"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    type TEXT NOT NULL,
    duration INTEGER,
    request TEXT NOT NULL,
    estimated_credits INTEGER NOT NULL,
    consumed_credits INTEGER,
    submitted_at REAL NOT NULL,
    status TEXT NOT NULL,
    raw_status TEXT NOT NULL,
    outcome TEXT,
    finished_at REAL,
    video_urls TEXT NOT NULL,
    error_message TEXT,
    local_path TEXT,
    due_at REAL,
    poll_count INTEGER NOT NULL,
    origin TEXT NOT NULL,
    origin_kind TEXT NOT NULL,
    delivery TEXT NOT NULL,
    delivery_attempts INTEGER NOT NULL,
    delivery_error TEXT,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_history ON tasks (type, duration, finished_at) WHERE outcome = 'succeeded';
-- Covers the ledger's 24-hour spend query (no table lookups) and the listing's order.
CREATE INDEX IF NOT EXISTS tasks_spend
    ON tasks (submitted_at, origin_kind, outcome, consumed_credits, estimated_credits);
DROP INDEX IF EXISTS tasks_submitted;
CREATE TABLE IF NOT EXISTS attempts (
    attempt_id TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    type TEXT NOT NULL,
    request TEXT NOT NULL,
    estimated_credits INTEGER NOT NULL,
    origin TEXT NOT NULL,
    origin_kind TEXT NOT NULL,
    user_id INTEGER,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS attempts_open ON attempts (created_at) WHERE state IN ('submitting', 'unknown');
CREATE INDEX IF NOT EXISTS attempts_scope ON attempts (origin_kind, user_id, created_at);
"""

COLUMNS = [
    "task_id",
    "api_url",
    "type",
    "duration",
    "request",
    "estimated_credits",
    "consumed_credits",
    "submitted_at",
    "status",
    "raw_status",
    "outcome",
    "finished_at",
    "video_urls",
    "error_message",
    "local_path",
    "due_at",
    "poll_count",
    "origin",
    "origin_kind",
    "delivery",
    "delivery_attempts",
    "delivery_error",
]
PROGRESS_COLUMNS = [
    "status",
    "raw_status",
    "consumed_credits",
    "video_urls",
    "error_message",
    "outcome",
    "finished_at",
    "due_at",
]
MUTABLE_COLUMNS = [c for c in COLUMNS if c not in {"task_id", "api_url", "type", "duration", "request", "submitted_at"}]


ATTEMPT_COLUMNS = [
    "attempt_id",
    "api_url",
    "type",
    "request",
    "estimated_credits",
    "origin",
    "origin_kind",
    "user_id",
    "created_at",
    "expires_at",
    "state",
    "task_id",
    "note",
]


def progress_columns(record: TaskRecord) -> list[str]:
    """What `save_progress` writes: the delivery mark only when the front end that saw the task end
    delivered it itself (a CLI task); every other delivery is the poller's."""
    return [*PROGRESS_COLUMNS, "delivery"] if record.delivery is Delivery.DELIVERED else PROGRESS_COLUMNS


def record_to_row(record: TaskRecord) -> dict[str, Any]:
    """Column values; JSON columns as JSON text (both backends read and write them as text)."""
    data = record.model_dump(mode="json")
    data["request"] = json.dumps(data["request"])
    data["video_urls"] = json.dumps(data["video_urls"])
    data["origin_kind"] = record.origin.kind
    data["origin"] = record.origin.model_dump_json()
    data["status"] = record.status.value
    return data


def record_from_row(row: dict[str, Any]) -> TaskRecord:
    data = {key: row[key] for key in COLUMNS if key != "origin_kind"}
    data["request"] = json.loads(data["request"])
    data["video_urls"] = json.loads(data["video_urls"])
    data["origin"] = _ORIGIN.validate_json(data["origin"])
    return TaskRecord.model_validate(data)


def attempt_to_row(attempt: Attempt) -> dict[str, Any]:
    data = attempt.model_dump(mode="json")
    data["request"] = json.dumps(data["request"])
    data["origin"] = attempt.origin.model_dump_json()
    data["origin_kind"] = attempt.origin.kind
    data["user_id"] = attempt.user_id
    return data


def attempt_from_row(row: dict[str, Any]) -> Attempt:
    data = {key: row[key] for key in ATTEMPT_COLUMNS if key not in ("origin_kind", "user_id")}
    data["request"] = json.loads(data["request"])
    data["origin"] = _ORIGIN.validate_json(data["origin"])
    return Attempt.model_validate(data)


_NOT_FAILED = "(outcome IS NULL OR outcome != 'failed')"
_OPEN = "state IN ('submitting', 'unknown')"


@dataclass(frozen=True, slots=True)
class SqlDialect:
    """The listing and budget queries of both backends, which differ only in how they spell a named
    parameter and the fields read inside the `origin` JSON (a Discord user id, an MCP client's identity)."""

    param: Callable[[str], str]
    user_id: str
    owner: str
    greatest: str

    @property
    def credits(self) -> str:
        """What a task counts: while it runs, the estimate unless the API says more (a 0 or a low figure
        reported mid-run never frees a budget); once it ended, what the API says it consumed."""
        return (
            f"CASE WHEN outcome IS NULL THEN {self.greatest}(estimated_credits, COALESCE(consumed_credits, 0)) "
            "ELSE COALESCE(consumed_credits, estimated_credits) END"
        )

    def _filter(
        self, params: dict[str, Any], clauses: list[str], *, user_column: str | None = None, **filters: Any
    ) -> list[str]:
        """`clauses` plus `column = :column` for each filter given; `user_id` and `owner` live in the tasks'
        `origin` JSON unless `user_column` names a real column (the attempts')."""
        columns = {"user_id": user_column or self.user_id, "owner": self.owner}
        for column, value in filters.items():
            if value is not None:
                clauses.append(f"{columns.get(column, column)} = {self.param(column)}")
                params[column] = value
        return clauses

    def _where(self, params: dict[str, Any], clauses: list[str], **filters: Any) -> str:
        clauses = self._filter(params, clauses, **filters)
        return f"WHERE {' AND '.join(clauses)}" if clauses else ""

    def recent(
        self,
        *,
        status: StatusFilter | None,
        origin_kind: str | None,
        user_id: int | None,
        owner: str | None = None,
        limit: int,
    ) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        clauses = ["outcome IS NULL"] if status == "running" else []
        outcome = Outcome(status).value if status not in (None, "running") else None
        where = self._where(params, clauses, origin_kind=origin_kind, user_id=user_id, owner=owner, outcome=outcome)
        return f"SELECT * FROM tasks {where} ORDER BY submitted_at DESC LIMIT {self.param('limit')}", params

    def _scope(self, params: dict[str, Any], scope: Scope, *, user_column: str) -> str:
        clauses = self._filter(
            params, ["1 = 1"], user_column=user_column, origin_kind=scope.origin_kind, user_id=scope.user_id
        )
        return " AND ".join(clauses)

    def usage(self, limit: SpendLimit, since: float, *, full: bool = False) -> tuple[str, dict[str, Any]]:
        """One row (credits, running, last_attempt_at) for the limit's scope. Unless `full` (for showing),
        parts the limit does not check are constants: a budget never scans the running tasks."""
        params: dict[str, Any] = {"since": since}
        tasks = self._scope(params, limit.scope, user_column=self.user_id)
        attempts = self._scope(params, limit.scope, user_column="user_id")
        since_sql = self.param("since")
        open_attempts = f"FROM attempts WHERE created_at >= {since_sql} AND {_OPEN} AND {attempts}"
        credits = "0"
        if limit.daily_credits or full:
            credits = (
                f"(SELECT COALESCE(SUM({self.credits}), 0) FROM tasks "
                f"WHERE submitted_at >= {since_sql} AND {_NOT_FAILED} AND {tasks}) "
                f"+ (SELECT COALESCE(SUM(estimated_credits), 0) {open_attempts})"
            )
        running = "0"
        if limit.max_running or full:
            running = (
                f"(SELECT COUNT(*) FROM tasks WHERE outcome IS NULL AND {tasks}) + (SELECT COUNT(*) {open_attempts})"
            )
        last = f"(SELECT MAX(created_at) FROM attempts WHERE {attempts})" if limit.cooldown_seconds or full else "NULL"
        return f"SELECT {credits} AS credits, {running} AS running, {last} AS last_attempt_at", params

    def credits_by_user(self, since: float, *, origin_kind: str) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {"since": since, "origin_kind": origin_kind}
        since_sql, kind = self.param("since"), self.param("origin_kind")
        return (
            f"SELECT user_id, SUM(credits) AS credits FROM ("
            f"SELECT {self.user_id} AS user_id, {self.credits} AS credits FROM tasks "
            f"WHERE submitted_at >= {since_sql} AND {_NOT_FAILED} AND origin_kind = {kind} "
            f"UNION ALL SELECT user_id, estimated_credits AS credits FROM attempts "
            f"WHERE created_at >= {since_sql} AND {_OPEN} AND origin_kind = {kind}"
            ") AS spent GROUP BY user_id",
            params,
        )

    def attempts(self, *, open_only: bool, limit: int) -> tuple[str, dict[str, Any]]:
        where = f"WHERE {_OPEN}" if open_only else ""
        return f"SELECT * FROM attempts {where} ORDER BY created_at DESC LIMIT {self.param('limit')}", {"limit": limit}


def usage_from_row(row: dict[str, Any]) -> Usage:
    last = row["last_attempt_at"]
    return Usage(credits=int(row["credits"]), running=int(row["running"]), last_attempt_at=last and float(last))


def stamp(attempt: Attempt) -> None:
    """Date the attempt when it gets its turn (after any wait for the lock), keeping its deadline's length."""
    deadline = attempt.expires_at - attempt.created_at
    attempt.created_at = time.time()
    attempt.expires_at = attempt.created_at + deadline


SQLITE = SqlDialect(
    param=lambda name: f":{name}",
    user_id="json_extract(origin, '$.user_id')",
    owner="json_extract(origin, '$.owner')",
    greatest="MAX",
)


class TaskStore(Protocol):
    """What pollers and front ends need from a store; a second backend implements the same."""

    async def add(self, record: TaskRecord) -> None:
        """Insert a newly submitted task (durably, before the caller does anything else)."""

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def save(self, record: TaskRecord, *, owner: str | None = None) -> bool:
        """Write the record's mutable fields; with `owner`, only while that owner holds the lease,
        which is then released. False when the lease was lost."""

    async def save_progress(self, record: TaskRecord) -> bool:
        """Write what the API said of a task still being tracked, from outside any lease (a front end
        that checked it itself). Delivery fields are left to the poller; False once tracking ended."""

    async def claim(
        self, *, owner: str, now: float, lease_seconds: float, limit: int, api_url: str, kinds: list[str]
    ) -> list[TaskRecord]:
        """Lease up to `limit` tasks due by `now`, soonest first."""

    async def renew(self, task_id: str, *, owner: str, until: float) -> bool:
        """Extend `owner`'s lease; False when it no longer holds it."""

    async def release_all(self, *, owner: str) -> int:
        """Give up every lease `owner` holds (a poller that stopped), so other pollers may claim them at once."""

    async def next_due(self, *, api_url: str, kinds: list[str]) -> float | None:
        """When the earliest unleased task falls due, or None when there is nothing to do."""

    async def recent(
        self,
        *,
        status: StatusFilter | None = None,
        origin_kind: str | None = None,
        user_id: int | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> list[TaskRecord]:
        """Most recent first; `status` is "running" (still tracked) or how tracking ended; `owner` is an MCP
        client's identity."""

    async def completion_times(self, type_: str, duration: int | None, *, limit: int = 200) -> list[float]:
        """Seconds from submission to success of the latest successful tasks of this kind."""

    async def credits_by_user(self, since: float, *, origin_kind: str) -> dict[int, int]:
        """Credits per `origin.user_id` since `since`: tasks not failed, plus open attempts."""

    # --- the ledger (see `ledger`) ---------------------------------------------

    async def reserve(self, attempt: Attempt, limits: Sequence[SpendLimit]) -> None:
        """In one transaction serialised with every other reservation on the same scopes: check `limits`
        (raising `SpendingRefusedError`) and write the attempt, stamped with the time it got its turn."""

    async def settle(self, attempt_id: str, record: TaskRecord) -> None:
        """In one transaction: insert the task and mark its attempt `submitted`."""

    async def close_attempt(self, attempt_id: str, state: AttemptState, note: str) -> bool:
        """Mark an open attempt `released` or `unknown`; False when it is no longer open."""

    async def get_attempt(self, attempt_id: str) -> Attempt | None: ...

    async def attempts(self, *, open_only: bool = True, limit: int = 50) -> list[Attempt]:
        """Most recent first; by default only those still open (`submitting`, `unknown`)."""

    async def usage(self, limit: SpendLimit) -> Usage:
        """What `limit`'s scope has spent and has running now, read without reserving anything."""

    def rate_limiter(self, api_url: str, rate: float) -> RateLimiter:
        """The request budget that every poller of this store shares for `api_url`."""

    def watch_new_tasks(self, wake: Callable[[], None]) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, call `wake()` when another process adds a task (where the backend can tell)."""

    async def close(self) -> None: ...


DEFAULT_STORE = "tasks.db"
SANDBOX_STORE = "sandbox-tasks.db"  # tasks of an embedded sandbox, which ends with its process


def default_store_path(name: str = DEFAULT_STORE) -> Path:
    return Path(platformdirs.user_data_dir("kling3")) / name


def path_from_url(url: str) -> Path:
    """`sqlite:///abs/path.db` (or a plain path) to a Path."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).expanduser()
    if "://" in url:
        raise ValueError(f"unsupported store url {url!r}: use sqlite:///path/to/tasks.db or postgresql://…")
    return Path(url).expanduser()


class SQLiteTaskStore:
    """`TaskStore` on one SQLite file; calls run in a worker thread, one connection per store."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._create()
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
        try:
            self._prepare(deadline=time.monotonic() + busy_timeout)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StoreError(f"The task store {self.path} is locked by another process ({exc}).") from None
            raise StoreError(
                f"The task store {self.path} is not a usable SQLite file ({exc}); it was left untouched. "
                "Restore it from a backup, or move it aside to start a new store."
            ) from None

    def _create(self) -> None:
        """A new store is built under a temporary name and linked into place, so that a file at `path` is
        never a half-made store: an empty one there was truncated. Losing the race to another process is
        fine: its store is the same."""
        building = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.new")
        try:
            with contextlib.closing(sqlite3.connect(building, isolation_level=None)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
            with contextlib.suppress(FileExistsError):
                os.link(building, self.path)
        finally:
            building.unlink(missing_ok=True)

    def _prepare(self, *, deadline: float) -> None:
        """WAL mode and the schema. Switching a new file to WAL does not wait for a busy lock as other
        statements do, so processes opening one file at once retry it until the busy timeout."""
        while True:
            try:
                with self._lock:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=NORMAL")
                    self._db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

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

    # --- the interface --------------------------------------------------------

    async def add(self, record: TaskRecord) -> None:
        values = record_to_row(record)
        sql = _insert_sql("tasks", COLUMNS)
        try:
            await self._run(lambda: self._transaction(lambda: self._db.execute(sql, values)))
        except sqlite3.IntegrityError as exc:
            raise TaskExistsError(f"task {record.task_id} is already recorded") from exc

    async def get(self, task_id: str) -> TaskRecord | None:
        row = await self._run(lambda: self._db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone())
        return None if row is None else record_from_row(row)

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
        sql = "UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?"
        cursor = await self._run(lambda: self._transaction(lambda: self._db.execute(sql, (owner,))))
        return int(cursor.rowcount)

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

    def _usage(self, limit: SpendLimit, now: float, *, full: bool = False) -> Usage:
        sql, params = SQLITE.usage(limit, now - DAY_SECONDS, full=full)
        return usage_from_row(self._db.execute(sql, params).fetchone())

    async def reserve(self, attempt: Attempt, limits: Sequence[SpendLimit]) -> None:
        await self._reservations.reserve(attempt, limits)

    async def _abandon(self, attempt: Attempt) -> bool:
        return await self.close_attempt(attempt.attempt_id, AttemptState.RELEASED, "cancelled before it was sent")

    async def _reserve_batch(self, batch: list[Reservation]) -> None:
        insert = _insert_sql("attempts", ATTEMPT_COLUMNS)

        def work() -> None:  # under BEGIN IMMEDIATE: one writer at a time across every process on the file
            for reservation in batch:
                stamp(reservation.attempt)
            now = batch[-1].attempt.created_at
            accepted = decide(batch, lambda limit: self._usage(limit, now))
            self._db.executemany(insert, [attempt_to_row(reservation.attempt) for reservation in accepted])

        await self._run(lambda: self._transaction(work))

    async def settle(self, attempt_id: str, record: TaskRecord) -> None:
        insert = _insert_sql("tasks", COLUMNS)
        mark = "UPDATE attempts SET state = 'submitted', task_id = ? WHERE attempt_id = ?"

        def work() -> None:
            self._db.execute(insert, record_to_row(record))
            self._db.execute(mark, (record.task_id, attempt_id))

        try:
            await self._run(lambda: self._transaction(work))
        except sqlite3.IntegrityError as exc:
            raise TaskExistsError(f"task {record.task_id} is already recorded") from exc

    async def close_attempt(self, attempt_id: str, state: AttemptState, note: str) -> bool:
        sql = f"UPDATE attempts SET state = ?, note = ? WHERE attempt_id = ? AND {_OPEN}"
        cursor = await self._run(lambda: self._transaction(lambda: self._db.execute(sql, (state, note, attempt_id))))
        return bool(cursor.rowcount)

    async def get_attempt(self, attempt_id: str) -> Attempt | None:
        sql = "SELECT * FROM attempts WHERE attempt_id = ?"
        row = await self._run(lambda: self._db.execute(sql, (attempt_id,)).fetchone())
        return None if row is None else attempt_from_row(row)

    async def attempts(self, *, open_only: bool = True, limit: int = 50) -> list[Attempt]:
        sql, params = SQLITE.attempts(open_only=open_only, limit=limit)
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
        return [attempt_from_row(row) for row in rows]

    async def usage(self, limit: SpendLimit) -> Usage:
        usage: Usage = await self._run(lambda: self._usage(limit, time.time(), full=True))
        return usage

    def rate_limiter(self, api_url: str, rate: float) -> RateLimiter:
        """Per process: pollers in separate processes on one file split the rate (`kling3 poller --workers`)."""
        if api_url not in self._limiters:
            self._limiters[api_url] = TokenBucket(rate)
        return self._limiters[api_url]

    def watch_new_tasks(self, wake: Callable[[], None]) -> contextlib.AbstractAsyncContextManager[None]:
        """SQLite cannot tell other processes; they find new tasks at their next sweep."""
        return contextlib.nullcontext()

    async def close(self) -> None:
        await self._run(self._db.close)


def _insert_sql(table: str, columns: list[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _postgres() -> ModuleType:
    try:
        from . import pg_store
    except ImportError as exc:
        raise StoreError(
            f"a postgresql:// store needs the postgres extra: {install_hint('postgres')} ({exc})"
        ) from None
    return pg_store


async def open_store(
    url: str = "", *, default_name: str = DEFAULT_STORE, pool_size: int = 10, busy_timeout: float = 30.0
) -> TaskStore:
    """The store a `[store] url` names; empty means the default SQLite file in the user data folder."""
    if is_postgres_url(url):
        store: TaskStore = await _postgres().PostgresTaskStore.open(url, pool_size=pool_size)
        return store
    try:
        path = path_from_url(url) if url else default_store_path(default_name)
        return await asyncio.to_thread(SQLiteTaskStore, path, busy_timeout=busy_timeout)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


async def migrate_postgres(url: str) -> tuple[int, int]:
    """Create or upgrade a PostgreSQL store's schema: (version before, version after)."""
    result: tuple[int, int] = await _postgres().migrate(url)
    return result
