"""The persistent task store: one typed interface, two backends (`sqlite`, `postgres`), one codec (`rows`).

Every task any front end submits is written here the moment the API returns
its id, before anything else happens. One column, `due_at`, says when the task
next needs work (a status check while it runs, a delivery once it ended);
pollers claim due tasks under a lease so two of them never work on one task at
once. The ledger's attempts live beside the tasks, so a spend and its record
are one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import platformdirs
from pydantic import SecretStr

from ...config import known_store_url
from ...domain.characters import Character
from ...domain.errors import StoreError, StoreUnavailableError, install_hint
from ...domain.ledger import Attempt, AttemptState, SpendLimit, Usage
from ...domain.mcp_tasks import McpTaskHandle
from ...domain.models import StatusFilter
from ...domain.records import TaskRecord
from ...domain.story_record import StoryRecord, StoryState
from ..ratelimit import RateLimiter
from .sqlite import SQLiteTaskStore
from .stats import StoreStats

__all__ = [
    "DEFAULT_STORE",
    "SANDBOX_STORE",
    "SQLiteTaskStore",
    "StatusFilter",
    "TaskStore",
    "is_postgres_url",
    "migrate_postgres",
    "open_store",
    "path_from_url",
]


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

    async def set_local_path(self, task_id: str, path: str) -> bool:
        """Note where the task's video was saved on this machine (a download asked for, a kept copy); False
        when the store holds no such task."""

    async def due_now(self, task_id: str, now: float) -> bool:
        """Make a task still followed due at `now` (a callback said it changed); False when the store follows
        no such task, or it is due already."""

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

    async def keep_task_id(self, attempt_id: str, task_id: str) -> bool:
        """Write the task id the API returned onto its `submitting` attempt, when the task itself could not be
        recorded with it; False when the attempt is no longer `submitting` or already has one."""

    async def kept_task_ids(self, *, api_url: str, limit: int) -> list[Attempt]:
        """`submitting` attempts of `api_url` that hold a task id: tasks created but not recorded yet, oldest
        first."""

    async def get_attempt(self, attempt_id: str) -> Attempt | None: ...

    async def attempts(self, *, open_only: bool = True, limit: int = 50) -> list[Attempt]:
        """Most recent first; by default only those still open (`submitting`, `unknown`)."""

    async def usage(self, limit: SpendLimit) -> Usage:
        """What `limit`'s scope has spent in the last 24 hours, and what the limit checks besides (videos
        running, the last attempt's time; 0 and None when it checks neither), read without reserving anything."""

    def rate_limiter(self, api_url: str, rate: float, burst: float | None = None) -> RateLimiter:
        """The request budget that every poller of this store shares for `api_url` (`burst`: how many may go
        at once after idle; default a tenth of a second's)."""

    def watch_new_tasks(self, wake: Callable[[], None]) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, call `wake()` when another process adds a task (where the backend can tell)."""

    async def announce(self, topic: str) -> None:
        """Tell every process watching announcements on this store (see `announcements`)."""

    def watch_announcements(self, heard: Callable[[str], None]) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, `heard(topic)` for each announcement, this process's own included."""

    # --- stories (see `story_rows`) ----------------------------------------------

    async def reserve_story(
        self, story: StoryRecord | None, attempts: Sequence[Attempt], limits: Sequence[SpendLimit]
    ) -> None:
        """In one reservation: every shot's attempt `reserved` (judged as one against `limits`) and the story
        (None: shots run again in a story already recorded)."""

    async def start_reserved(self, attempt_id: str, request: dict[str, Any], *, expires_at: float) -> bool:
        """`reserved` → `submitting` with its real request; False when it is no longer reserved."""

    async def release_reserved(self, attempt_id: str, note: str) -> bool:
        """`reserved` → `released`; False when it is no longer reserved (sent meanwhile, or released)."""

    async def get_story(self, story_id: str) -> StoryRecord | None: ...

    async def save_story(self, record: StoryRecord, *, owner: str) -> bool:
        """Write while `owner` holds the story's lease, then release it; False when it was lost."""

    async def claim_stories(
        self, *, owner: str, now: float, lease_seconds: float, limit: int, api_url: str, kinds: list[str]
    ) -> list[StoryRecord]: ...

    async def lease_story(
        self, story_id: str, *, owner: str, now: float, lease_seconds: float
    ) -> StoryRecord | None: ...

    async def renew_story(self, story_id: str, *, owner: str, until: float) -> bool: ...

    async def wake_story(self, story_id: str, now: float) -> None: ...

    async def next_story_due(self, *, api_url: str, kinds: list[str]) -> float | None: ...

    async def recent_stories(
        self,
        *,
        state: StoryState | None = None,
        origin_kind: str | None = None,
        user_id: int | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> list[StoryRecord]: ...

    async def stats(self) -> StoreStats:
        """Tasks by state, the due backlog, and the measured checks and time per video (see `stats`)."""

    async def prune(self, before: float) -> tuple[int, int]:
        """Delete tasks that ended and were delivered before `before`, and settled attempts; never an open
        attempt or a task still to deliver. Returns (tasks, attempts) deleted."""

    async def add_character(self, character: Character) -> bool:
        """Keep a new character; False when its owner has one of that name already (nothing changed)."""

    async def characters(self, owner: str, *, name: str | None = None) -> list[Character]:
        """An owner's characters by name (or the one named `name`)."""

    async def delete_character(self, owner: str, name: str) -> bool: ...

    async def set_person_limits(self, subject: str, limits: dict[str, Any]) -> None:
        """Set (None: unset) some of a person's own limits over MCP; the others are kept."""

    async def person_limits(self, subject: str | None = None) -> dict[str, dict[str, Any]]:
        """Every person's own limits by subject (or the one person's), each None where unset."""

    async def clear_person_limits(self, subject: str) -> bool: ...

    async def add_mcp_task(self, handle: McpTaskHandle) -> None: ...

    async def get_mcp_task(self, mcp_task_id: str, *, owner: str) -> McpTaskHandle | None:
        """The handle when `owner` holds it; None for another owner's as for an unknown id."""

    async def mcp_tasks(
        self, owner: str, *, before: tuple[float, str] | None = None, limit: int
    ) -> list[McpTaskHandle]:
        """`owner`'s handles, newest first; with `before` (a handle's creation time and id), those after it."""

    async def cancel_mcp_task(self, mcp_task_id: str, at: float) -> bool:
        """Mark the handle cancelled (once: False when it already was)."""

    async def check_schema(self) -> None:
        """Raise `StoreError` unless the store answers with the schema this version needs (a readiness probe)."""

    async def close(self) -> None: ...


log = logging.getLogger("kling3_tools.store")

RETRY_FIRST_SECONDS = 0.1
RETRY_LAST_SECONDS = 2.0


def retry_delay(tries: int) -> float:
    """Seconds before asking a store whose server did not answer again, after `tries` earlier retries: 0.1,
    doubling to 2. Its own statements, its notifications, a worker's start and the pollers' sweeps all wait so."""
    return min(RETRY_FIRST_SECONDS * 2.0**tries, RETRY_LAST_SECONDS)


DEFAULT_STORE = "tasks.db"
SANDBOX_STORE = "sandbox-tasks.db"  # tasks of an embedded sandbox, which ends with its process


def default_store_path(name: str = DEFAULT_STORE) -> Path:
    return Path(platformdirs.user_data_dir("kling3")) / name


def path_from_url(url: str) -> Path:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` (SQLAlchemy's convention) or a plain path, to a Path."""
    if known_store_url(url).startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).expanduser()
    return Path(url).expanduser()


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _postgres(module: str = "postgres") -> ModuleType:
    """A PostgreSQL module of this package, imported only when a postgresql:// url is used (psycopg is an extra)."""
    try:
        return importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        raise StoreError(
            f"a postgresql:// store needs the postgres extra: {install_hint('postgres')} ({exc})"
        ) from None


async def open_store(
    url: str = "",
    *,
    password: SecretStr | None = None,
    default_name: str = DEFAULT_STORE,
    pool_size: int = 10,
    busy_timeout: float = 30.0,
    wait: bool = False,
) -> TaskStore:
    """The store a `[store] url` names; empty means the default SQLite file in the user data folder. A
    PostgreSQL `password` is given apart from the URL (`[store] password`). With `wait`, a PostgreSQL server
    that does not answer yet is waited for (a worker started before its database), saying so once."""
    if is_postgres_url(url):
        return await _open_postgres(_with_password(url, password), pool_size=pool_size, wait=wait)
    try:
        path = path_from_url(url) if url else default_store_path(default_name)
        return await asyncio.to_thread(SQLiteTaskStore, path, busy_timeout=busy_timeout)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


async def _open_postgres(url: str, *, pool_size: int, wait: bool) -> TaskStore:
    tries = 0
    while True:
        try:
            store: TaskStore = await _postgres().PostgresTaskStore.open(url, pool_size=pool_size)
            return store
        except StoreUnavailableError as exc:
            if not wait:
                raise
            if tries == 0:
                log.warning("waiting for the task store: %s", exc)
        await asyncio.sleep(retry_delay(tries))
        tries += 1


async def migrate_postgres(url: str, password: SecretStr | None = None) -> tuple[int, int]:
    """Create or upgrade a PostgreSQL store's schema: (version before, version after)."""
    result: tuple[int, int] = await _postgres("pg_schema").migrate(_with_password(url, password))
    return result


def _with_password(url: str, password: SecretStr | None) -> str:
    if password is None or not password.get_secret_value():
        return url
    with_password: str = _postgres("pg_schema").with_password(url, password.get_secret_value())
    return with_password
