"""The SQLite store's schema and dialect: a file created whole (`create`), its schema made if missing each time
it opens, with the columns added since it was made (`prepare`: SQLite has no migrations of its own;
PostgreSQL's are in `pg_schema`)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from pathlib import Path

from .characters import SQLITE_TABLE as CHARACTERS
from .mcp_tasks import SQLITE_TABLE as MCP_TASKS
from .people import SQLITE_TABLE as PERSON_LIMITS
from .rows import HOUR_SECONDS, SqlDialect

ADDED_COLUMNS = ("archive_key", "archived_url")  # in SCHEMA too; added to older files when they open
SCHEMA = """
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
    archive_key TEXT,
    archived_url TEXT,
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
DROP INDEX IF EXISTS attempts_open;
CREATE INDEX IF NOT EXISTS attempts_held ON attempts (created_at) WHERE state IN ('reserved', 'submitting', 'unknown');
CREATE INDEX IF NOT EXISTS attempts_scope ON attempts (origin_kind, user_id, created_at);
CREATE TABLE IF NOT EXISTS stories (
    story_id TEXT PRIMARY KEY,
    api_url TEXT NOT NULL,
    origin_kind TEXT NOT NULL,
    user_id INTEGER,
    owner TEXT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    due_at REAL,
    lease_owner TEXT,
    lease_until REAL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stories_due ON stories (due_at) WHERE due_at IS NOT NULL;
"""


def add_columns(db: sqlite3.Connection) -> None:
    """Columns added since a file's store was made."""
    present = {row[0] if isinstance(row, tuple) else row["name"] for row in db.execute("PRAGMA table_info(tasks)")}
    for column in ADDED_COLUMNS:
        if column not in present:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                db.execute(f"ALTER TABLE tasks ADD COLUMN {column} TEXT")


def add_spend_hours(db: sqlite3.Connection, dialect: SqlDialect) -> None:
    """The hourly spend totals the budgets read, and the triggers on `tasks` that keep them: made when a file
    lacks them, or made again when its triggers are not the ones this version writes (an older rule), in one
    write transaction with a new count of the tasks already there. However many processes open the file at
    once, no task is counted twice or missed."""
    table, triggers, count = spend_hours_schema(dialect)
    if _triggers(db) == triggers:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if _triggers(db) != triggers:
            for name in triggers:
                db.execute(f"DROP TRIGGER IF EXISTS {name}")
            db.execute("DROP TABLE IF EXISTS spend_hours")
            for statement in (table, *triggers.values(), count):
                db.execute(statement)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _triggers(db: sqlite3.Connection) -> dict[str, str]:
    cursor = db.cursor()
    cursor.row_factory = None
    sql = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'tasks_spend_%'"
    return dict(cursor.execute(sql).fetchall())


def spend_hours_schema(dialect: SqlDialect) -> tuple[str, dict[str, str], str]:
    """The table, its triggers by name, and the count of the tasks already there. A task counts in the hour
    it was submitted, for every scope it falls under (`Scope.name`: everyone's, its front end's, its user's);
    a failed one counts nothing."""

    def scopes(row: str) -> list[str]:
        return [
            "'*:*'",
            f"{row}origin_kind || ':*'",
            f"{row}origin_kind || ':' || json_extract({row}origin, '$.user_id')",
        ]

    def counted(row: str) -> str:
        return f"(CASE WHEN {row}outcome = 'failed' THEN 0 ELSE {dialect.credits_of(row)} END)"

    def add(row: str, sign: str = "") -> str:
        each = " UNION ALL ".join(f"SELECT {scope} AS scope" for scope in scopes(row))
        return (
            f"INSERT INTO spend_hours (scope, hour, credits) SELECT scope, {dialect.hour(f'{row}submitted_at')}, "
            f"{sign}{counted(row)} FROM ({each}) WHERE scope IS NOT NULL "
            "ON CONFLICT (scope, hour) DO UPDATE SET credits = credits + excluded.credits"
        )

    changed = " OR ".join(
        f"{old} IS NOT {old.replace('OLD.', 'NEW.')}"
        for old in (counted("OLD."), "OLD.origin_kind", "json_extract(OLD.origin, '$.user_id')", "OLD.submitted_at")
    )
    every_task = " UNION ALL ".join(
        f"SELECT {scope} AS scope, {dialect.hour('submitted_at')} AS hour, {counted('')} AS credits FROM tasks"
        for scope in scopes("")
    )
    triggers = {
        "tasks_spend_added": f"AFTER INSERT ON tasks BEGIN {add('NEW.')}; END",
        "tasks_spend_removed": f"AFTER DELETE ON tasks BEGIN {add('OLD.', '-')}; END",
        "tasks_spend_changed": "AFTER UPDATE OF outcome, consumed_credits, estimated_credits, origin, origin_kind, "
        f"submitted_at ON tasks WHEN {changed} BEGIN {add('OLD.', '-')}; {add('NEW.')}; END",
    }
    return (
        "CREATE TABLE spend_hours (scope TEXT NOT NULL, hour INTEGER NOT NULL, credits INTEGER NOT NULL, "
        "PRIMARY KEY (scope, hour)) WITHOUT ROWID",
        {name: f"CREATE TRIGGER {name} {body}" for name, body in triggers.items()},
        "INSERT INTO spend_hours (scope, hour, credits) "
        f"SELECT scope, hour, SUM(credits) FROM ({every_task}) WHERE scope IS NOT NULL GROUP BY scope, hour",
    )


SQLITE = SqlDialect(
    param=lambda name: f":{name}",
    json=lambda name: f":{name}",
    user_id="json_extract(origin, '$.user_id')",
    owner="json_extract(origin, '$.owner')",
    story_id="json_extract(origin, '$.story_id')",
    greatest="MAX",
    hour=lambda column: f"CAST({column} / {HOUR_SECONDS} AS INTEGER)",  # times are positive: truncating floors
)


def create(path: Path) -> None:
    """A new store is built under a temporary name and linked into place, so that a file at `path` is never a
    half-made store: an empty one there was truncated. Losing the race to another process is fine: its store
    is the same."""
    building = path.with_name(f".{path.name}.{uuid.uuid4().hex}.new")
    try:
        with contextlib.closing(sqlite3.connect(building, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA + CHARACTERS + PERSON_LIMITS + MCP_TASKS)
        with contextlib.suppress(FileExistsError):
            os.link(building, path)
    finally:
        building.unlink(missing_ok=True)


def prepare(db: sqlite3.Connection, *, deadline: float) -> None:
    """WAL mode and the schema. Switching a new file to WAL does not wait for a busy lock as other statements
    do, so processes opening one file at once retry it until the busy timeout."""
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA + CHARACTERS + PERSON_LIMITS + MCP_TASKS)
            add_columns(db)
            add_spend_hours(db, SQLITE)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
