"""The SQLite store's schema: created if missing each time a file opens, with the columns added since a
file was made (SQLite has no migrations of its own; PostgreSQL's are in `pg_schema`)."""

from __future__ import annotations

import contextlib
import sqlite3

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
