"""The row codec and the SQL both backends share: task and attempt rows, the listing and the ledger's queries.

Both backends store the same columns (JSON as text) and differ only in how they
spell a named parameter and read a field inside the `origin` JSON, which is
what `SqlDialect` holds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from ...domain.ledger import DAY_SECONDS, Attempt, Scope, SpendLimit, Usage
from ...domain.models import StatusFilter
from ...domain.records import Delivery, Origin, Outcome, TaskRecord

_ORIGIN = TypeAdapter[Origin](Origin)


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
    "archive_key",
    "archived_url",
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


HOUR_SECONDS = 3600
_NOT_FAILED = "(outcome IS NULL OR outcome != 'failed')"
OPEN_ATTEMPT = "state IN ('reserved', 'submitting', 'unknown')"  # counted against the budgets
SENT_ATTEMPT = "state IN ('submitting', 'unknown')"  # counted as running too: a reserved shot is not yet


@dataclass(frozen=True, slots=True)
class SqlDialect:
    """The listing and budget queries of both backends, which differ only in how they spell a named
    parameter and the fields read inside the `origin` JSON (a Discord user id, an MCP client's identity)."""

    param: Callable[[str], str]
    json: Callable[[str], str]  # a named parameter holding JSON text, for a JSON column
    user_id: str
    owner: str
    story_id: str
    greatest: str
    hour: Callable[[str], str]  # the hour a time column falls in (seconds // 3600), as `spend_hours` files it

    @property
    def credits(self) -> str:
        return self.credits_of("")

    def credits_of(self, row: str) -> str:
        """What a task not failed counts (`row`: a prefix such as `NEW.`): while it runs, the estimate unless
        the API says more (a 0 or a low figure reported mid-run never frees a budget); once it ended, what the
        API says it consumed."""
        return (
            f"CASE WHEN {row}outcome IS NULL "
            f"THEN {self.greatest}({row}estimated_credits, COALESCE({row}consumed_credits, 0)) "
            f"ELSE COALESCE({row}consumed_credits, {row}estimated_credits) END"
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

    def usage(self, limit: SpendLimit, since: float, *, credits: bool = False) -> tuple[str, dict[str, Any]]:
        """One row (credits, running, last_attempt_at) for the limit's scope. Parts the limit does not check
        are constants (a budget never scans the running tasks), but the credits when asked for (to show them).

        The tasks' credits since `since` are the scope's hourly totals (`spend_hours`, kept by triggers on
        `tasks`) for the hours after the one `since` falls in, plus the tasks of that first hour from `since`
        on, summed row by row: exact, and at most an hour of rows whatever the day's volume."""
        first_hour = math.floor(since / HOUR_SECONDS)
        params: dict[str, Any] = {"since": since}
        tasks = self._scope(params, limit.scope, user_column=self.user_id)
        attempts = self._scope(params, limit.scope, user_column="user_id")
        since_sql, hour_sql = self.param("since"), self.param("first_hour")
        open_attempts = f"FROM attempts WHERE created_at >= {since_sql} AND {OPEN_ATTEMPT} AND {attempts}"
        spent = "0"
        if limit.daily_credits or credits:
            # The hour test decides which tasks are the first hour's, exactly as the triggers file them; `before`
            # (a second past that hour, so float rounding never leaves one out) only bounds the index walk.
            params.update(scope=limit.scope.name, first_hour=first_hour, before=(first_hour + 1) * HOUR_SECONDS + 1)
            spent = (
                f"(SELECT COALESCE(SUM(credits), 0) FROM spend_hours "
                f"WHERE scope = {self.param('scope')} AND hour > {hour_sql}) "
                f"+ (SELECT COALESCE(SUM({self.credits}), 0) FROM tasks WHERE submitted_at >= {since_sql} "
                f"AND submitted_at < {self.param('before')} AND {self.hour('submitted_at')} <= {hour_sql} "
                f"AND {_NOT_FAILED} AND {tasks}) "
                f"+ (SELECT COALESCE(SUM(estimated_credits), 0) {open_attempts})"
            )
        running = "0"
        if limit.max_running:  # a story counts once while any of its shots is held, sent or running
            alone = f"{self.story_id} IS NULL"
            stories = (
                f"SELECT {self.story_id} AS story FROM tasks WHERE outcome IS NULL AND {tasks} AND NOT {alone} "
                f"UNION SELECT {self.story_id} AS story {open_attempts} AND NOT {alone}"
            )
            running = (
                f"(SELECT COUNT(*) FROM tasks WHERE outcome IS NULL AND {tasks} AND {alone}) "
                f"+ (SELECT COUNT(*) {open_attempts} AND {SENT_ATTEMPT} AND {alone}) "
                f"+ (SELECT COUNT(*) FROM ({stories}) AS held)"
            )
        last = f"(SELECT MAX(created_at) FROM attempts WHERE {attempts})" if limit.cooldown_seconds else "NULL"
        return f"SELECT {spent} AS credits, {running} AS running, {last} AS last_attempt_at", params

    def credits_by_user(self, since: float, *, origin_kind: str) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {"since": since, "origin_kind": origin_kind}
        since_sql, kind = self.param("since"), self.param("origin_kind")
        return (
            f"SELECT user_id, SUM(credits) AS credits FROM ("
            f"SELECT {self.user_id} AS user_id, {self.credits} AS credits FROM tasks "
            f"WHERE submitted_at >= {since_sql} AND {_NOT_FAILED} AND origin_kind = {kind} "
            f"UNION ALL SELECT user_id, estimated_credits AS credits FROM attempts "
            f"WHERE created_at >= {since_sql} AND {OPEN_ATTEMPT} AND origin_kind = {kind}"
            ") AS spent GROUP BY user_id",
            params,
        )

    def insert(self, table: str, columns: list[str]) -> str:
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(self.param(c) for c in columns)})"

    def prune(self, before: float) -> list[tuple[str, dict[str, Any]]]:
        """What retention deletes: tasks that ended and were delivered (or given up) before `before`, and
        attempts settled before it (`submitted` ones have their task; `released` ones spent nothing), and
        stories that ended and were delivered. Open attempts (`reserved`, `submitting`, `unknown`) stay until
        resolved, whatever their age. Then the hourly spend totals no budget reads any more."""
        params, since = {"before": before}, self.param("before")
        past_hour = math.floor(min(before, time.time() - 2 * DAY_SECONDS) / HOUR_SECONDS)  # a day to spare for clocks
        return [
            (
                f"DELETE FROM tasks WHERE outcome IS NOT NULL AND delivery != 'pending' AND finished_at < {since}",
                params,
            ),
            (f"DELETE FROM attempts WHERE state IN ('submitted', 'released') AND created_at < {since}", params),
            (f"DELETE FROM stories WHERE due_at IS NULL AND state != 'running' AND created_at < {since}", params),
            (f"DELETE FROM spend_hours WHERE hour < {self.param('hour')}", {"hour": past_hour}),
            (  # the MCP task handles that follow nothing kept any more
                f"DELETE FROM mcp_tasks WHERE created_at < {since}"
                " AND (task_id IS NULL OR task_id NOT IN (SELECT task_id FROM tasks))"
                " AND (story_id IS NULL OR story_id NOT IN (SELECT story_id FROM stories))",
                params,
            ),
        ]

    def attempts(self, *, open_only: bool, limit: int) -> tuple[str, dict[str, Any]]:
        where = f"WHERE {OPEN_ATTEMPT}" if open_only else ""
        return f"SELECT * FROM attempts {where} ORDER BY created_at DESC LIMIT {self.param('limit')}", {"limit": limit}


class Statements:
    """What the queries mixed into each backend (`story_rows`, `stats`) run on: the backend supplies its
    `_dialect`, `_fetch` (the rows of one statement, in a write transaction when `write`) and `_write` (how
    many rows one statement changed)."""

    _dialect: SqlDialect

    async def _fetch(self, sql: str, params: dict[str, Any], *, write: bool = False) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def _write(self, sql: str, params: dict[str, Any]) -> int:
        raise NotImplementedError


class TaskUpdates(Statements):
    async def set_local_path(self, task_id: str, path: str) -> bool:
        p = self._dialect.param
        sql = f"UPDATE tasks SET local_path = {p('path')} WHERE task_id = {p('task_id')}"
        return bool(await self._write(sql, {"path": path, "task_id": task_id}))

    async def due_now(self, task_id: str, now: float) -> bool:
        p = self._dialect.param
        sql = (
            f"UPDATE tasks SET due_at = {p('now')} "
            f"WHERE task_id = {p('task_id')} AND outcome IS NULL AND (due_at IS NULL OR due_at > {p('now')})"
        )
        return bool(await self._write(sql, {"now": now, "task_id": task_id}))


def usage_from_row(row: dict[str, Any]) -> Usage:
    last = row["last_attempt_at"]
    return Usage(credits=int(row["credits"]), running=int(row["running"]), last_attempt_at=last and float(last))


def stamp(attempt: Attempt) -> None:
    """Date the attempt when it gets its turn (after any wait for the lock), keeping its deadline's length."""
    deadline = attempt.expires_at - attempt.created_at
    attempt.created_at = time.time()
    attempt.expires_at = attempt.created_at + deadline
