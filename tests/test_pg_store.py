"""What only the PostgreSQL store does: migrations, index use, NOTIFY wake-ups, a rate limit shared by processes."""

from __future__ import annotations

import asyncio
import json
import time

import psycopg
import pytest
from pydantic import SecretStr

from kling3_tools.adapters.store import open_store
from kling3_tools.adapters.store.pg_schema import SCHEMA_VERSION, migrate
from kling3_tools.adapters.store.postgres import CLAIM_SQL, PostgresTaskStore
from kling3_tools.domain.errors import StoreError
from kling3_tools.domain.ledger import SpendLimit
from kling3_tools.domain.records import CliOrigin, McpOrigin, TaskRecord

from .support import API, KINDS, make_record


async def test_a_database_without_the_schema_asks_for_migrate(postgres_cluster):
    url = postgres_cluster.new_database()
    with pytest.raises(StoreError, match="kling3 store migrate"):
        await PostgresTaskStore.open(url)
    first, second = await asyncio.gather(migrate(url), migrate(url))  # two deployments starting at once
    assert sorted([first, second]) == [(0, SCHEMA_VERSION), (SCHEMA_VERSION, SCHEMA_VERSION)]
    assert await migrate(url) == (SCHEMA_VERSION, SCHEMA_VERSION)
    store = await PostgresTaskStore.open(url)
    await store.add(make_record("n75a"))
    assert (await store.get("n75a")).origin == CliOrigin()
    await store.close()


async def test_a_schema_newer_than_the_code_is_refused(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE kling3_schema SET version = version + 1")
    with pytest.raises(StoreError, match="newer"):
        await PostgresTaskStore.open(postgres_url)
    with pytest.raises(StoreError, match="newer"):
        await migrate(postgres_url)


async def test_errors_name_the_server_but_never_the_password(postgres_cluster):
    url = f"postgresql://kling3:s3cret-pw@127.0.0.1:{postgres_cluster.port + 1}/nowhere"
    with pytest.raises(StoreError) as caught:
        await PostgresTaskStore.open(url)
    assert f"127.0.0.1:{postgres_cluster.port + 1}/nowhere" in caught.value.message
    assert "s3cret-pw" not in caught.value.message


def explain_claim(url: str, now: float) -> str:
    params = {"api_url": API, "now": now, "kinds": KINDS, "limit": 8, "owner": "x", "until": now + 60}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE tasks")
        rows = conn.execute(f"EXPLAIN (FORMAT JSON) {CLAIM_SQL}", params).fetchall()  # type: ignore[arg-type]
    return json.dumps(rows[0][0])


async def test_the_claim_walks_an_index_not_the_table(postgres_url):
    store = await PostgresTaskStore.open(postgres_url)
    now = time.time()
    rows = [make_record(f"n75{i}", due_at=now + 60 + i) for i in range(3000)]
    rows += [make_record(f"n75due{i}", due_at=now - 1) for i in range(20)]
    finished = make_record("n75done", due_at=None)
    await asyncio.gather(*(store.add(r) for r in [*rows, finished]))
    plan = explain_claim(postgres_url, now)
    assert "tasks_due" in plan
    assert '"Seq Scan"' not in plan
    claimed = await store.claim(owner="a", now=now, lease_seconds=30, limit=8, api_url=API, kinds=KINDS)
    assert len(claimed) == 8 and all(r.task_id.startswith("n75due") for r in claimed)
    await store.close()


async def test_adding_a_task_wakes_a_store_watching_from_elsewhere(postgres_url):
    watcher, writer = await PostgresTaskStore.open(postgres_url), await PostgresTaskStore.open(postgres_url)
    woken = asyncio.Event()
    async with watcher.watch_new_tasks(woken.set):
        await asyncio.wait_for(woken.wait(), 10)  # the first wake-up says "look, you may have missed some"
        woken.clear()
        await writer.add(make_record("n75a"))
        await asyncio.wait_for(woken.wait(), 10)
    await asyncio.gather(watcher.close(), writer.close())


async def test_the_rate_limit_is_shared_by_stores_in_different_processes(postgres_url):
    stores = [await PostgresTaskStore.open(postgres_url) for _ in range(3)]
    limiters = [s.rate_limiter(API, 10) for s in stores]

    async def take_all(limiter, count: int) -> None:
        for _ in range(count):
            await limiter.take()

    started = time.monotonic()
    await asyncio.gather(*(take_all(limiter, 10) for limiter in limiters))
    # 30 tokens at 10/s with a burst of 1: at least 2.9 s in all, whoever took them
    assert time.monotonic() - started >= 2.9 * 0.9

    await limiters[0].pause(1.0)  # one worker saw a 429
    paused = time.monotonic()
    await limiters[2].take()
    assert time.monotonic() - paused >= 0.9
    await asyncio.gather(*(s.close() for s in stores))


async def test_a_worker_without_a_token_waits_for_the_next_one_in_one_transaction(postgres_url, monkeypatch):
    from kling3_tools.adapters.store.pg_ratelimit import PostgresRateLimiter

    reserved = 0
    reserve = PostgresRateLimiter._reserve

    async def counted(self: PostgresRateLimiter, most: int) -> tuple[int, float]:
        nonlocal reserved
        reserved += 1
        return await reserve(self, most)

    monkeypatch.setattr(PostgresRateLimiter, "_reserve", counted)
    store = await PostgresTaskStore.open(postgres_url, pool_size=20)
    workers = [PostgresRateLimiter(store._db, "http://burst.test", rate=20) for _ in range(20)]  # 20 processes

    async def take_three(limiter: PostgresRateLimiter) -> int:
        return sum([await limiter.take() for _ in range(3)])

    started = time.monotonic()
    taken = sum(await asyncio.gather(*(take_three(limiter) for limiter in workers)))
    took = time.monotonic() - started
    await store.close()
    assert taken == 60
    assert reserved == 60  # one transaction per token, however many wait (was: every waiter retrying)
    assert took >= (60 - 2) / 20 * 0.9  # the rate holds: a burst of 2 at 20/s


async def test_due_tasks_nobody_here_serves_are_never_read_by_a_claim(postgres_url):
    """MCP tasks while the MCP server is down: due, earlier than any other, and many."""
    store = await PostgresTaskStore.open(postgres_url)
    now = time.time()
    unserved = [make_record(f"n75mcp{i}", due_at=now - 100 - i, origin=McpOrigin(session="s")) for i in range(2000)]
    served = [make_record(f"n75cli{i}", due_at=now - 1) for i in range(5)]
    await asyncio.gather(*(store.add(r) for r in [*unserved, *served]))
    params = {"api_url": API, "now": now, "kinds": ["cli"], "limit": 8, "owner": "x", "until": now + 60}
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ANALYZE tasks")
        plan = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {CLAIM_SQL}", params).fetchall()[0][0]  # type: ignore[arg-type]
        conn.execute("UPDATE tasks SET lease_owner = NULL, lease_until = NULL")  # EXPLAIN ANALYZE claimed them
    claimed = await store.claim(owner="a", now=now, lease_seconds=30, limit=8, api_url=API, kinds=["cli"])
    await store.close()
    assert sorted(r.task_id for r in claimed) == sorted(r.task_id for r in served)
    nodes = _nodes(plan[0]["Plan"])
    [walk] = [node for node in nodes if node.get("Index Name") == "tasks_due_kind"]
    assert walk["Actual Rows"] + walk.get("Rows Removed by Filter", 0) < 100  # not the 2,000 MCP tasks
    assert not [node for node in nodes if node["Node Type"] == "Seq Scan"]


def _nodes(node: dict) -> list[dict]:
    return [node, *(child for sub in node.get("Plans", []) for child in _nodes(sub))]


async def test_a_password_with_url_characters_is_given_apart_from_the_url(postgres_cluster, tmp_path, monkeypatch):
    """`[store] password` (here from KLING_STORE__PASSWORD_FILE) reaches a SCRAM-checked role intact, though it
    holds `@`, `:`, `/` and `?`, which would break a URL; a wrong one is refused without being shown."""
    from kling3_tools.adapters.store import migrate_postgres, open_store
    from kling3_tools.config import Settings

    password = "p@ss:w/rd?#x"
    postgres_cluster.role_with_password("guarded", password)
    url = postgres_cluster.new_database().replace("kling3@", "guarded@")
    (tmp_path / "password").write_text(password + "\n")
    monkeypatch.setenv("KLING_STORE__PASSWORD_FILE", str(tmp_path / "password"))
    settings = Settings.load(store={"url": url})
    assert await migrate_postgres(url, settings.store.password) == (0, SCHEMA_VERSION)
    store = await open_store(url, password=settings.store.password)
    try:
        assert await store.stats() is not None
        await store.check_schema()
    finally:
        await store.close()
    with pytest.raises(StoreError) as refused:
        await open_store(url, password=SecretStr("wrong"))
    assert "wrong" not in str(refused.value) and password not in str(refused.value)


async def test_an_unreadable_url_with_a_password_is_one_line_without_it():
    from kling3_tools.adapters.store import open_store

    with pytest.raises(StoreError) as refused:
        await open_store("postgresql://kling3@127.0.0.1/db?notanoption=1", password=SecretStr("s3cret"))
    assert str(refused.value) == "[store] url is not a PostgreSQL connection URL that libpq can read"


async def test_settle_batches_across_an_hour_take_its_spend_totals_in_one_order(postgres_url):
    """Each task's insert locks its hour's `spend_hours` rows: a batch straddling an hour must lock them in time
    order, as another process's batch does, or the two deadlock."""
    store = await open_store(postgres_url)
    hour = 3600 * (int(time.time()) // 3600)

    def at(task_id: str, submitted_at: float) -> TaskRecord:
        record = make_record(task_id)
        record.submitted_at = submitted_at
        return record

    other = await psycopg.AsyncConnection.connect(postgres_url)  # another process's batch, in time order
    try:
        await other.execute(store._insert_task_sql(), store._insert_task_params(at("o1", hour - 1), None))
        settling = asyncio.create_task(store._settle_batch([("a1", at("s1", hour + 1)), ("a2", at("s2", hour - 1))]))
        await asyncio.sleep(0.3)
        insert = store._insert_task_sql(), store._insert_task_params(at("o2", hour + 1), None)
        await asyncio.wait_for(other.execute(*insert), 10)
        await other.commit()
        await asyncio.wait_for(settling, 10)
    finally:
        await other.close()
    assert (await store.usage(SpendLimit("budget", daily_credits=1))).credits == 4 * 400
    await store.close()
