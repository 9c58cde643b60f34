"""The store's contract, on both backends: a real SQLite file and a throwaway PostgreSQL database."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time

import pytest

from kling3_tools.adapters.store import SQLiteTaskStore, open_store, path_from_url
from kling3_tools.domain.errors import StoreError, TaskExistsError
from kling3_tools.domain.ledger import OPEN_STATES, Attempt, AttemptState, Scope, SpendLimit
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import (
    CliOrigin,
    Delivery,
    DiscordOrigin,
    McpOrigin,
    Outcome,
    TaskRecord,
    WebhookOrigin,
)
from kling3_tools.domain.tasks import Task, TaskStatus

from .support import API, KINDS, make_record


@pytest.mark.parametrize(
    "origin",
    [
        CliOrigin(),
        WebhookOrigin(url="https://example.com/hook"),
        McpOrigin(session="s1", client_name="claude"),
        DiscordOrigin(guild_id=1, channel_id=2, message_id=3, user_id=4),
    ],
)
async def test_round_trip_with_every_origin(store, origin):
    record = make_record("n75a", origin=origin, duration=7, sound=False)
    await store.add(record)
    loaded = await store.get("n75a")
    assert loaded == record
    assert loaded.origin == origin
    assert loaded.request["duration"] == 7
    assert loaded.estimated_credits == 7 * 54


async def test_sqlite_file_is_in_wal_mode_and_shared(tmp_path):
    store = SQLiteTaskStore(tmp_path / "tasks.db")
    await store.add(make_record("n75a"))
    other = SQLiteTaskStore(store.path)
    assert (await other.get("n75a")) is not None
    await other.close()
    await store.close()
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_quick_read_never_waits_for_a_writer_of_another_process(tmp_path):
    store = SQLiteTaskStore(tmp_path / "tasks.db", busy_timeout=5)
    await store.add(make_record("n75a"))
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer in the middle of its transaction
    holder.execute("UPDATE tasks SET poll_count = 7")
    started = time.monotonic()
    assert (await store.get("n75a")).poll_count == 0  # what was committed, at once
    assert time.monotonic() - started < 1
    holder.execute("COMMIT")
    assert (await store.get("n75a")).poll_count == 7
    holder.close()
    await store.close()


RECOVERING = """
import fcntl, os, sys, time
shm = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(shm, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 128)  # attached to the file, as every connection is
fcntl.lockf(shm, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 122)  # the WAL recovery lock
os.pwrite(shm, bytes(96), 0)  # the WAL index's header as a crash leaves it
print("recovering", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.process
async def test_a_quick_read_while_another_process_recovers_the_file_waits_off_the_event_loop(tmp_path):
    """Another process recovering the file after a crash (as SQLite's unix locks say it is) makes a reader
    meet SQLITE_BUSY_RECOVERY: the quick read goes to the worker thread and waits there."""
    store = SQLiteTaskStore(tmp_path / "tasks.db", busy_timeout=10)
    await store.add(make_record("n75a"))
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RECOVERING, f"{store.path}-shm", "1.0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert await holder.stdout.readline() == b"recovering\n"
        reading = asyncio.create_task(store.get("n75a"))
        ticks = 0
        for _ in range(20):  # the event loop runs on meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not reading.done()
        assert (await reading).task_id == "n75a"
    finally:
        await holder.communicate()
        await store.close()


async def test_a_read_that_walks_many_rows_stays_off_the_event_loop(tmp_path):
    store = SQLiteTaskStore(tmp_path / "tasks.db")
    await store.add(make_record("n75a", origin=DiscordOrigin(guild_id=1, channel_id=2, user_id=9)))
    discord = SpendLimit("discord", Scope("discord", 9), daily_credits=1000, max_running=2, cooldown_seconds=5)
    store._lock.acquire()  # the worker thread's connection is in use
    try:
        assert (await store.get("n75a")).task_id == "n75a"  # one index: at once
        assert (await store.usage(SpendLimit("budget", daily_credits=1))).credits == 400
        walking = [
            asyncio.create_task(store.usage(discord)),  # every running task of the user
            asyncio.create_task(store.next_due(api_url=API, kinds=KINDS)),  # every due task of these kinds
        ]
        await asyncio.sleep(0.2)
        assert not any(task.done() for task in walking)
    finally:
        store._lock.release()
    assert (await walking[0]).running == 1
    assert await walking[1] == 0.0
    await store.close()


async def test_a_second_store_sees_what_the_first_added(store, other):
    await store.add(make_record("n75a", origin=WebhookOrigin(url="https://e.com/h")))
    assert (await other.get("n75a")).origin == WebhookOrigin(url="https://e.com/h")
    assert await other.get("n75zz") is None


async def test_a_saved_videos_path_is_noted_on_its_task_only(store, other):
    await store.add(make_record("n75a"))
    await store.add(make_record("n75b"))
    assert await store.set_local_path("n75a", "/videos/n75a.mp4")
    assert not await store.set_local_path("n75zz", "/videos/n75zz.mp4")
    assert (await other.get("n75a")).local_path == "/videos/n75a.mp4"
    assert (await other.get("n75b")).local_path is None


async def test_duplicate_task_id_is_refused(store):
    await store.add(make_record("n75a"))
    with pytest.raises(TaskExistsError, match="n75a"):
        await store.add(make_record("n75a"))


async def test_claim_leases_due_tasks_once(store, other):
    now = time.time()
    for i in range(10):
        await store.add(make_record(f"n75{i}", due_at=now - 10 + i))
    await store.add(make_record("n75later", due_at=now + 100))
    first, second = await asyncio.gather(
        store.claim(owner="a", now=now, lease_seconds=30, limit=6, api_url=API, kinds=KINDS),
        other.claim(owner="b", now=now, lease_seconds=30, limit=6, api_url=API, kinds=KINDS),
    )
    ids_a, ids_b = {r.task_id for r in first}, {r.task_id for r in second}
    assert not ids_a & ids_b
    assert ids_a | ids_b == {f"n75{i}" for i in range(10)}
    # after the lease expires, the tasks can be claimed again
    again = await other.claim(owner="c", now=now + 31, lease_seconds=30, limit=20, api_url=API, kinds=KINDS)
    assert {r.task_id for r in again} == ids_a | ids_b
    assert [r.due_at for r in again] == sorted(r.due_at for r in again)  # soonest first


async def test_claim_only_takes_kinds_it_can_deliver_and_its_own_api(store):
    await store.add(make_record("n75d", origin=DiscordOrigin(guild_id=1, channel_id=2, user_id=3)))
    elsewhere = make_record("n75e")
    elsewhere.api_url = "http://other"
    await store.add(elsewhere)
    await store.add(make_record("n75c"))
    claimed = await store.claim(owner="a", now=time.time(), lease_seconds=5, limit=10, api_url=API, kinds=["cli"])
    assert [r.task_id for r in claimed] == ["n75c"]


async def test_save_requires_the_lease_and_releases_it(store):
    await store.add(make_record("n75a"))
    [record] = await store.claim(owner="a", now=time.time(), lease_seconds=30, limit=1, api_url=API, kinds=KINDS)
    record.poll_count = 3
    assert not await store.save(record, owner="b")
    assert await store.save(record, owner="a")
    assert (await store.get("n75a")).poll_count == 3
    assert not await store.save(record, owner="a")  # the lease was released by the first save
    again = await store.claim(owner="b", now=time.time(), lease_seconds=30, limit=1, api_url=API, kinds=KINDS)
    assert [r.task_id for r in again] == ["n75a"]


async def test_next_due_skips_leased_tasks(store):
    now = time.time()
    await store.add(make_record("n75a", due_at=now - 1))
    await store.add(make_record("n75b", due_at=now + 50))
    assert await store.next_due(api_url=API, kinds=KINDS) == pytest.approx(now - 1)
    await store.claim(owner="a", now=now, lease_seconds=100, limit=1, api_url=API, kinds=KINDS)
    assert await store.next_due(api_url=API, kinds=KINDS) == pytest.approx(now + 50)


async def test_save_progress_never_overwrites_a_finished_task(store):
    await store.add(make_record("n75a", origin=WebhookOrigin(url="https://e.com/h")))
    record = await store.get("n75a")
    record.apply(Task(task_id="n75a", status="SUCCESS", response=["https://v/1.mp4"]), time.time())
    assert await store.save_progress(record)
    stale = record.model_copy(update={"outcome": None, "status": TaskStatus.RUNNING, "raw_status": "IN_PROGRESS"})
    assert not await store.save_progress(stale)
    saved = await store.get("n75a")
    assert saved.outcome is Outcome.SUCCEEDED
    assert saved.delivery is Delivery.PENDING  # the webhook is still the poller's to deliver


async def test_history_credits_and_listing(store):
    now = time.time()
    for i, (duration, took, outcome) in enumerate([(5, 100, "succeeded"), (5, 140, "succeeded"), (10, 300, "failed")]):
        record = make_record(f"n75{i}", duration=duration, sound=False)
        record.submitted_at = now - 1000
        record.finish(Outcome(outcome), now - 1000 + took)
        await store.add(record)
    await store.add(make_record("n75run", origin=DiscordOrigin(guild_id=1, channel_id=2, user_id=9)))
    assert sorted(await store.completion_times("pro-text-to-video", 5)) == pytest.approx([100, 140])
    assert await store.completion_times("pro-text-to-video", 10) == []
    everyone = SpendLimit("budget", daily_credits=1)
    assert (await store.usage(everyone)).credits == 270 + 270 + 400  # the failed one is not counted
    assert (await store.usage(SpendLimit("budget", max_running=5))).running == 1
    assert (await store.usage(everyone)).running == 0  # a budget alone never counts what runs
    assert (await store.usage(SpendLimit("discord", Scope("discord", 9)))).credits == 400
    assert [r.task_id for r in await store.recent(status="running")] == ["n75run"]
    assert {r.task_id for r in await store.recent(status="succeeded")} == {"n750", "n751"}
    assert await store.credits_by_user(now - 2000, origin_kind="discord") == {9: 400}
    assert [r.task_id for r in await store.recent(origin_kind="discord", user_id=9)] == ["n75run"]
    assert await store.recent(origin_kind="discord", user_id=8) == []


def test_store_urls(tmp_path):
    assert path_from_url(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert path_from_url(str(tmp_path / "b.db")) == tmp_path / "b.db"
    with pytest.raises(ValueError, match="unsupported"):
        path_from_url("mysql://localhost/db")


async def test_an_unknown_url_scheme_is_a_store_error():
    with pytest.raises(StoreError, match="postgresql://"):
        await open_store("mysql://localhost/db")


async def test_default_store_lives_in_the_user_data_folder():
    store = await open_store()
    assert isinstance(store, SQLiteTaskStore)
    assert "kling3" in str(store.path)
    assert store.path.name == "tasks.db"
    await store.close()


async def test_a_stopping_poller_releases_every_lease_it_holds(store):
    for task_id in ("n75l1", "n75l2"):
        await store.add(make_record(task_id))
    claimed = await store.claim(owner="A", now=time.time(), lease_seconds=600, limit=10, api_url=API, kinds=KINDS)
    assert len(claimed) == 2
    assert await store.release_all(owner="B") == 0
    assert await store.release_all(owner="A") == 2
    again = await store.claim(owner="B", now=time.time(), lease_seconds=600, limit=10, api_url=API, kinds=KINDS)
    assert {r.task_id for r in again} == {"n75l1", "n75l2"}


async def test_prune_keeps_what_it_must(store):

    day, now = 86400.0, time.time()

    def ended(task_id: str, at: float, delivery: Delivery) -> TaskRecord:
        record = make_record(task_id)
        record.finish(Outcome.SUCCEEDED, at)
        record.delivery, record.due_at = delivery, None
        return record

    old = now - 100 * day
    records = [ended("n75old", old, Delivery.DELIVERED), ended("n75owed", old, Delivery.PENDING)]
    for record in [*records, ended("n75new", now - day, Delivery.DELIVERED), make_record("n75running")]:
        await store.add(record)
    assert await store.prune(now - 90 * day) == (1, 0)
    assert {r.task_id for r in await store.recent(limit=50)} == {"n75owed", "n75new", "n75running"}

    request = GenerateRequest.build(type="pro-text-to-video", prompt="x")
    attempts = {state: Attempt.new(request, api_url=API, origin=CliOrigin(), deadline=60) for state in AttemptState}
    for state, attempt in attempts.items():
        await store.reserve(attempt, [])  # dated now, when each gets its turn
        if state is AttemptState.SUBMITTED:
            await store.settle(attempt.attempt_id, make_record("n75settled"))
        elif state is not AttemptState.SUBMITTING:
            await store.close_attempt(attempt.attempt_id, state, "test")
    await asyncio.sleep(0.01)
    tasks, settled = await store.prune(time.time())  # everything before now: what may go, goes
    assert settled == 2 and tasks == 1  # `submitted` and `released`; the delivered n75new
    assert {a.state for a in await store.attempts(open_only=False, limit=50)} == set(
        OPEN_STATES
    )  # open attempts (a story's reserved shots too) stay, whatever their age
    assert {r.task_id for r in await store.recent(limit=50)} == {"n75owed", "n75running", "n75settled"}


async def test_each_poller_applies_keep_days(sandbox, tmp_path):
    from harness.helpers import eventually
    from kling3_tools.config import Settings
    from kling3_tools.service import KlingService

    settings = Settings.load(
        api_key=sandbox.api_key, base_url=sandbox.url, store={"url": f"sqlite:///{tmp_path / 't.db'}", "keep_days": 30}
    )
    async with KlingService.open(settings) as service:
        record = make_record("n75ancient")
        record.api_url = service.api_url
        record.finish(Outcome.SUCCEEDED, time.time() - 40 * 86400)
        record.delivery, record.due_at = Delivery.DELIVERED, None
        await service.store.add(record)
        await service.store.add(make_record("n75fresh"))
        async with service.polling():

            async def pruned() -> bool:
                return await service.get("n75ancient") is None

            await eventually(pruned, timeout=20)
        assert await service.get("n75fresh") is not None


async def test_settles_at_once_are_written_together_and_each_learns_its_own_fate(store):
    """A burst of settles is grouped into few transactions; one that cannot land (its task is already
    recorded) fails alone, and every other one is written."""
    request = GenerateRequest.build(type="pro-text-to-video", prompt="x")
    attempts = [Attempt.new(request, api_url=API, origin=CliOrigin(), deadline=60) for _ in range(20)]
    for attempt in attempts:
        await store.reserve(attempt, [])
    await store.add(make_record("n75taken"))
    ids = [f"n75settle{i}" for i in range(19)] + ["n75taken"]
    results = await asyncio.gather(
        *(store.settle(a.attempt_id, make_record(task_id)) for a, task_id in zip(attempts, ids, strict=True)),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [type(None)] * 19 + [TaskExistsError]
    states = {a.attempt_id: (await store.get_attempt(a.attempt_id)).state for a in attempts}
    assert list(states.values()) == [AttemptState.SUBMITTED] * 19 + [AttemptState.SUBMITTING]
    assert all([await store.get(task_id) for task_id in ids])


async def test_stats_count_the_backlog_and_measure_what_a_video_costs(store):
    from kling3_tools.adapters.store.stats import capacity_of, capacity_warning

    now = time.time()
    for i in range(10):
        done = make_record(f"n75done{i}", due_at=None)
        done.poll_count = 30 + i  # 34.5 checks on average
        done.submitted_at, done.finished_at, done.outcome, done.delivery = (
            now - 300,
            now - 300 + 120 + i,
            Outcome.SUCCEEDED,
            Delivery.DELIVERED,
        )
        await store.add(done)
    late = [make_record(f"n75late{i}", due_at=now - 60 - i) for i in range(3)]
    waiting = [make_record(f"n75wait{i}", due_at=now + 60) for i in range(40)]
    for record in [*late, *waiting]:
        await store.add(record)
    stats = await store.stats()
    assert (stats.running, stats.succeeded, stats.due_now) == (43, 10, 3)
    assert stats.oldest_due_seconds is not None and 62 <= stats.oldest_due_seconds < 70
    assert stats.checks_per_video == 34.5
    assert stats.seconds_p50 == 125 and stats.seconds_p90 == 129
    capacity = capacity_of(stats, rate=5)
    assert capacity is not None
    assert capacity.videos_per_day == int(5 * 86400 / 34.5)  # 12,521
    assert capacity.running_at_once == int(5 * 125 / 34.5)  # 18: fewer than the 43 running
    warning = capacity_warning(stats, rate=5)
    assert warning is not None and "43 videos are running, more than the 18" in warning
    assert capacity_warning(stats, rate=50) is None
