"""The sandbox's account: its tasks, balance, counters and fault knobs; with a file, shared by every embedded
sandbox of one machine."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ...domain import catalog
from .options import SandboxOptions


class Fault(BaseModel):
    """The next `count` requests to `endpoint` get this answer instead of the real one: an error status, or
    with status 200 a hostile success (`drip_seconds`: one byte at a time; `pad_bytes`: a huge JSON body)."""

    endpoint: Literal["generate", "status"]
    status: int = Field(ge=200, le=599)
    count: int = Field(default=1, ge=1)
    retry_after: float | str | None = Field(default=None, description="The Retry-After header: seconds, or any text")
    message: str | None = Field(default=None, description="The error message (markup, say)")
    code: str | None = Field(default=None, description="The error code in the body, whatever the status")
    drip_seconds: float | None = Field(default=None, gt=0)
    pad_bytes: int | None = Field(default=None, gt=0)


@dataclass
class SandboxTask:
    """A task; its outcome follows from its times (wall clock), so it reads the same from any process."""

    task_id: str
    type: catalog.TaskType
    request: dict[str, Any]
    credits: int
    created_at: float
    finishes_at: float
    fails: bool
    reason: str = ""  # why it fails, when it was not chance (an input the sandbox could not fetch)
    external_task_id: str = ""  # the caller's own id (Kling's format), unique per account

    def status_word(self, now: float) -> str:
        if now < self.finishes_at:
            return "IN_PROGRESS"
        return "FAILED" if self.fails else "SUCCESS"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "type": self.type.value})

    @classmethod
    def from_json(cls, text: str) -> SandboxTask:
        data = json.loads(text)
        return cls(**{**data, "type": catalog.TaskType(data["type"])})


MAX_UPLOADS = 100
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
_BOOK_SCHEMA = """
CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 1), balance INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, credits INTEGER NOT NULL, body TEXT NOT NULL);
"""


@dataclass
class SandboxState:
    """Counters and knobs live in memory. Tasks and the balance too, unless `path` names a file: then they
    are kept there as well, so that one embedded sandbox after another (one per `kling3 --sandbox`
    command) serves the same account and can answer for tasks an earlier one created."""

    options: SandboxOptions
    path: Path | None = None
    balance: int = 0
    tasks: dict[str, SandboxTask] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    faults: deque[Fault] = field(default_factory=deque)
    in_flight_status: Counter[str] = field(default_factory=Counter)
    max_concurrent_polls: int = 0
    uploads: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # key -> (content type, bytes)
    _tokens: float = 0.0
    _tokens_at: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.balance = self.options.starting_balance
        self._tokens = float(self.options.rate_limit_burst)
        self._tokens_at = time.monotonic()
        self._book: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._book = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._book.executescript(_BOOK_SCHEMA)
            self._book.execute("INSERT OR IGNORE INTO account VALUES (1, ?)", (self.balance,))
            (self.balance,) = self._book.execute("SELECT balance FROM account").fetchone()

    def keep_upload(self, key: str, content_type: str, data: bytes) -> None:
        """Keep an upload; the oldest go once there are too many (the sandbox is not a store)."""
        self.uploads[key] = (content_type, data)
        while len(self.uploads) > MAX_UPLOADS or sum(len(d) for _, d in self.uploads.values()) > MAX_UPLOAD_BYTES:
            del self.uploads[next(iter(self.uploads))]

    def close(self) -> None:
        if self._book is not None:
            self._book.close()

    def task_count(self) -> int:
        """Tasks ever created on this account (every process's, with a file)."""
        if self._book is None:
            return len(self.tasks)
        (count,) = self._book.execute("SELECT COUNT(*) FROM tasks").fetchone()
        return int(count)

    @contextlib.contextmanager
    def _transaction(self, book: sqlite3.Connection) -> Iterator[None]:
        book.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            book.execute("ROLLBACK")
            raise
        book.execute("COMMIT")

    def charge(self, task: SandboxTask) -> bool:
        """Take the task's credits and keep the task; False (nothing taken) when the balance is short."""
        if self._book is None:
            if task.credits > self.balance:
                return False
            self.balance -= task.credits
        else:
            with self._transaction(self._book):
                (balance,) = self._book.execute("SELECT balance FROM account").fetchone()
                if task.credits > balance:
                    return False
                self._book.execute("UPDATE account SET balance = ?", (balance - task.credits,))
                self._book.execute("INSERT INTO tasks VALUES (?, ?, ?)", (task.task_id, task.credits, task.to_json()))
                self.balance = balance - task.credits
        self.tasks[task.task_id] = task
        return True

    def find(self, task_id: str) -> SandboxTask | None:
        task = self.tasks.get(task_id)
        if task is None and self._book is not None:
            row = self._book.execute("SELECT credits, body FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is not None:
                task = SandboxTask.from_json(row[1])
                task.credits = row[0]
                self.tasks[task_id] = task
        return task

    def find_external(self, external_task_id: str) -> SandboxTask | None:
        """The task created with the caller's own id (Kling's format)."""
        if self._book is not None:
            sql = "SELECT task_id FROM tasks WHERE json_extract(body, '$.external_task_id') = ?"
            row = self._book.execute(sql, (external_task_id,)).fetchone()
            return None if row is None else self.find(row[0])
        return next((t for t in self.tasks.values() if t.external_task_id == external_task_id), None)

    def refund(self, task: SandboxTask) -> None:
        """Give back a failed task's credits, once, whichever process notices first."""
        if self._book is None:
            self.balance += task.credits
        else:
            with self._transaction(self._book):
                cursor = self._book.execute(
                    "UPDATE tasks SET credits = 0 WHERE task_id = ? AND credits > 0", (task.task_id,)
                )
                if cursor.rowcount:
                    self._book.execute("UPDATE account SET balance = balance + ?", (task.credits,))
                (self.balance,) = self._book.execute("SELECT balance FROM account").fetchone()
        task.credits = 0

    def reset_balance(self) -> None:
        self.balance = self.options.starting_balance
        if self._book is not None:
            self._book.execute("UPDATE account SET balance = ?", (self.balance,))

    def take_token(self) -> float | None:
        """None when the request may pass; else seconds until a token is free."""
        rate = self.options.rate_limit_per_second
        if rate <= 0:
            return None
        now = time.monotonic()
        self._tokens = min(self.options.rate_limit_burst, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / rate

    def next_fault(self, endpoint: str) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint == endpoint:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def stats(self) -> dict[str, Any]:
        now = time.time()
        return {
            "balance": self.balance,
            "requests": dict(self.requests),
            "rejections": dict(self.rejections),
            "tasks": len(self.tasks),
            "tasks_by_status": dict(Counter(t.status_word(now) for t in self.tasks.values())),
            "max_concurrent_polls_of_one_task": self.max_concurrent_polls,
        }
