"""The hourly spend totals the budgets read (`spend_hours`, kept by triggers on `tasks`) always give the sum
of the tasks they count, whatever is done to the tasks, on both backends, and in a store made before them."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sqlite3
import time

import psycopg

from kling3_tools.adapters.store import SQLiteTaskStore, TaskStore, open_store, path_from_url
from kling3_tools.adapters.store.pg_schema import SCHEMA_VERSION, migrate
from kling3_tools.domain.ledger import DAY_SECONDS, Scope, SpendLimit
from kling3_tools.domain.records import CliOrigin, Delivery, DiscordOrigin, McpOrigin, Outcome, TaskRecord

from .support import make_record

USERS = [7, 8, 1234567890123456789]
SCOPES = [Scope(), Scope("cli"), Scope("mcp"), Scope("discord"), *(Scope("discord", user) for user in USERS)]


def counted(record: TaskRecord) -> int:
    """The rule the budgets follow, written out apart from the SQL."""
    if record.outcome is Outcome.FAILED:
        return 0
    if record.outcome is None:
        return max(record.estimated_credits, record.consumed_credits or 0)
    return record.estimated_credits if record.consumed_credits is None else record.consumed_credits


def expected(records: dict[str, TaskRecord], scope: Scope, since: float) -> int:
    def covered(record: TaskRecord) -> bool:
        user = getattr(record.origin, "user_id", None)
        return scope.origin_kind in (None, record.origin.kind) and scope.user_id in (None, user)

    return sum(counted(r) for r in records.values() if r.submitted_at >= since and covered(r))


async def assert_budgets_match(store: TaskStore, records: dict[str, TaskRecord]) -> None:
    for scope in SCOPES:
        since = time.time() - DAY_SECONDS
        used = await store.usage(SpendLimit("budget", scope, daily_credits=1))
        assert used.credits == expected(records, scope, since), scope


def a_history(rng: random.Random, count: int) -> dict[str, TaskRecord]:
    """Tasks from every front end, submitted over 27 hours and a few minutes ahead (a clock that drifts):
    on whole hours, just inside and just outside the 24-hour window, and anywhere between."""
    now = time.time()
    edge = now - DAY_SECONDS
    hour = 3600 * (int(now) // 3600)
    times = [edge + 120, edge - 120, hour, math.nextafter(hour, 0), hour - 1e-6, hour - 3600 * 23, hour - 3600 * 24]
    times += [math.nextafter(hour - 3600 * 23, 0), hour - 3600 * 25, now + 300]
    records = {}
    for i in range(count):
        origin = rng.choice(
            [CliOrigin(), McpOrigin(session="s"), *(DiscordOrigin(guild_id=1, channel_id=2, user_id=u) for u in USERS)]
        )
        record = make_record(f"n{i}", origin=origin, duration=rng.choice([3, 5, 10]), sound=rng.random() < 0.5)
        record.submitted_at = times[i] if i < len(times) else now - rng.uniform(-600, 27 * 3600)
        record.consumed_credits = rng.choice([None, 0, record.estimated_credits, record.estimated_credits * 2])
        records[record.task_id] = record
    return records


def oldest_hour(store_url: str) -> int | None:
    sql = "SELECT MIN(hour) FROM spend_hours"
    if store_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(path_from_url(store_url))) as db:
            return db.execute(sql).fetchone()[0]
    with psycopg.connect(store_url) as conn:
        return conn.execute(sql).fetchone()[0]


async def test_the_hourly_totals_follow_every_change_to_the_tasks(store, store_url):
    rng = random.Random(12)
    records = a_history(rng, 160)
    long_ago = make_record("long-ago")  # its hour is gone with it when pruned
    long_ago.submitted_at = time.time() - 3 * DAY_SECONDS
    long_ago.finish(Outcome.SUCCEEDED, long_ago.submitted_at + 100)
    long_ago.delivery = Delivery.DELIVERED
    await store.add(long_ago)
    assert oldest_hour(store_url) == math.floor(long_ago.submitted_at / 3600)
    for record in records.values():
        await store.add(record)
    await assert_budgets_match(store, records)

    for record in rng.sample(list(records.values()), 80):  # mid-run credit figures, then ends
        record.consumed_credits = rng.choice([None, 0, 1, record.estimated_credits * 3])
        await store.save_progress(record)
        if rng.random() < 0.7:
            outcome = rng.choice([Outcome.SUCCEEDED, Outcome.FAILED, Outcome.FAILED])
            record.finish(outcome, record.submitted_at + 100)
            record.delivery = Delivery.DELIVERED
            record.consumed_credits = rng.choice([None, 0, record.estimated_credits])
            await store.save(record)
    for record in rng.sample(list(records.values()), 10):  # the same task recorded again by `save`
        await store.save(record)
    await assert_budgets_match(store, records)

    before = time.time() - DAY_SECONDS - 3600
    pruned, _ = await store.prune(before)
    assert pruned
    assert oldest_hour(store_url) >= math.floor((time.time() - 2 * DAY_SECONDS) / 3600)
    records = {
        i: r
        for i, r in records.items()
        if r.finished_at is None or r.delivery is Delivery.PENDING or r.finished_at >= before
    }
    await assert_budgets_match(store, records)


async def test_an_older_sqlite_file_gains_its_totals_once_however_many_stores_open_it_at_once(tmp_path):
    path = tmp_path / "tasks.db"
    store = SQLiteTaskStore(path)
    records = a_history(random.Random(3), 60)
    for record in records.values():
        await store.add(record)
    await store.close()
    with contextlib.closing(
        sqlite3.connect(path, isolation_level=None)
    ) as db:  # as a file written before the totals existed
        for trigger in ("tasks_spend_added", "tasks_spend_removed", "tasks_spend_changed"):
            db.execute(f"DROP TRIGGER {trigger}")
        db.execute("DROP TABLE spend_hours")

    stores = await asyncio.gather(*(asyncio.to_thread(SQLiteTaskStore, path) for _ in range(4)))
    for opened in stores:
        await assert_budgets_match(opened, records)
    late = make_record("late", origin=DiscordOrigin(guild_id=1, channel_id=2, user_id=7))
    await stores[0].add(late)
    await assert_budgets_match(stores[1], {**records, "late": late})
    for opened in stores:
        await opened.close()

    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:  # as counted by another rule
        db.execute("DROP TRIGGER tasks_spend_changed")
        db.execute("CREATE TRIGGER tasks_spend_changed AFTER UPDATE ON tasks BEGIN SELECT 1; END")
        db.execute("UPDATE spend_hours SET credits = credits + 1")
    store = SQLiteTaskStore(path)
    await assert_budgets_match(store, {**records, "late": late})
    late.finish(Outcome.FAILED, time.time())
    await store.save(late)
    await assert_budgets_match(store, records)
    await store.close()


async def test_a_postgres_store_gains_its_totals_when_migrated(postgres_url):
    store = await open_store(postgres_url)
    records = a_history(random.Random(5), 60)
    for record in records.values():
        await store.add(record)
    await store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as a database of the version before the totals
        conn.execute("DROP TABLE spend_hours, characters, person_limits, mcp_tasks")
        conn.execute("DROP FUNCTION kling3_tasks_spend, kling3_spend, kling3_counted CASCADE")
        conn.execute("UPDATE kling3_schema SET version = %s", (SCHEMA_VERSION - 3,))

    assert await migrate(postgres_url) == (SCHEMA_VERSION - 3, SCHEMA_VERSION)
    store = await open_store(postgres_url)
    await assert_budgets_match(store, records)
    await store.close()
