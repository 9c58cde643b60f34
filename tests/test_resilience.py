"""Pollers that never die: a locked SQLite file, a restarted PostgreSQL, a SIGTERM, a backlog."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from harness.helpers import eventually, poller_env, start_kling3
from kling3_tools.adapters.store import SQLiteTaskStore
from kling3_tools.config import Settings
from kling3_tools.domain.records import Outcome
from kling3_tools.service import KlingService

from .conftest import set_options, stats
from .support import FAST, delivered, locked, settings_for, submit, submit_batch, worker_env


@pytest.mark.process
async def test_a_standalone_poller_survives_a_locked_sqlite_file(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    db = tmp_path / "tasks.db"
    async with KlingService.open(settings_for(sandbox, db), schedule=FAST) as service:
        ids = await submit_batch(service, receiver.url, 6)
    env = {**worker_env(sandbox, f"sqlite:///{db}"), "KLING_STORE__BUSY_TIMEOUT_SECONDS": "0.3"}
    log = tmp_path / "poller.log"
    poller = start_kling3(["-v", "poller"], env, log)
    try:
        with locked(db):
            await eventually(lambda: "sweep failed" in log.read_text(), timeout=30)
            await asyncio.sleep(3)
            assert poller.poll() is None, log.read_text()  # still running through the lock
        await eventually(lambda: len(receiver.events) == len(ids), timeout=60)
        assert poller.poll() is None
    finally:
        poller.terminate()
        poller.wait(timeout=20)
    assert set(receiver.counts()) == set(ids) and max(receiver.counts().values()) == 1
    assert "sweeps work again" in log.read_text()


async def test_three_pollers_survive_a_postgresql_restart(sandbox, receiver, postgres_cluster, postgres_url, tmp_path):
    store_url = postgres_url
    set_options(sandbox, finish_seconds=2.0, finish_spread=0.5)
    settings = Settings.load(api_key=sandbox.api_key, base_url=sandbox.url, store={"url": store_url})
    async with KlingService.open(settings, schedule=FAST) as service:
        ids = await submit(service, receiver.url, 60)
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers = [start_kling3(["-v", "poller"], worker_env(sandbox, store_url), log) for log in logs]
    try:
        await eventually(lambda: all("Polling for" in log.read_text() for log in logs), timeout=60)
        await eventually(lambda: len(receiver.events) >= 5, timeout=60)
        postgres_cluster.restart()
        await eventually(lambda: len(set(receiver.counts())) == len(ids), timeout=120)
        # A webhook posted just as the connections were cut has its mark saved on the next try (a repeat):
        # the store, not the receiver, says when every delivery is recorded.
        async with KlingService.open(settings, schedule=FAST) as service:
            await eventually(lambda: _all_delivered(service, len(ids)), timeout=120)
        assert [w.poll() for w in workers] == [None, None, None], [log.read_text()[-2000:] for log in logs]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=20)
    repeats = sum(receiver.counts().values()) - len(ids)
    assert repeats <= 3 * 8  # at most the jobs in flight when the connections were cut, each once more
    assert set(receiver.counts()) == set(ids)


async def test_a_poller_started_while_postgresql_is_down_waits_for_it_and_delivers(
    sandbox, receiver, postgres_cluster, postgres_url, tmp_path
):
    """In Kubernetes or compose a worker often starts before its database: it waits, saying so once."""
    set_options(sandbox, finish_seconds=0.5)
    settings = Settings.load(api_key=sandbox.api_key, base_url=sandbox.url, store={"url": postgres_url})
    async with KlingService.open(settings, schedule=FAST) as service:
        ids = await submit(service, receiver.url, 5)
    log = tmp_path / "poller.log"
    with postgres_cluster.down():
        worker = start_kling3(["poller"], worker_env(sandbox, postgres_url), log)
        await eventually(lambda: "waiting for the task store" in log.read_text(), timeout=30)
        await asyncio.sleep(2)
        assert worker.poll() is None, log.read_text()
    try:
        await eventually(lambda: set(receiver.counts()) == set(ids), timeout=30)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    assert log.read_text().count("waiting for the task store") == 1


async def _all_delivered(service: KlingService, count: int) -> bool:
    return len(await delivered(service)) == count


async def test_a_backlog_is_never_reported_timed_out_without_asking_the_api(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=0.5)
    settings = settings_for(sandbox, tmp_path / "t.db", rate_limit_per_second=2, max_task_minutes=0.02)
    async with KlingService.open(settings, schedule=FAST) as service:
        finished = await submit_batch(service, receiver.url, 12)
        set_options(sandbox, finish_seconds=600)
        [slow] = await submit_batch(service, receiver.url, 1)
        await asyncio.sleep(1.5)  # every task is past max_task_minutes before the first check
        poller = service.poller()
        job = asyncio.create_task(poller.run())
        try:
            await eventually(lambda: len(receiver.events) == 13, timeout=60)
        finally:
            poller.stop()
            await job
        records = {task_id: await service.get(task_id) for task_id in [*finished, slow]}
    assert {records[t].outcome for t in finished} == {Outcome.SUCCEEDED}  # 12 at 2 checks/s: a 6 s backlog
    assert records[slow].outcome is Outcome.TIMED_OUT and "Still" in records[slow].error_message


@pytest.mark.process
async def test_sigterm_lets_jobs_finish_or_hands_their_tasks_back_at_once(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=0.2, status_delay=5)
    db = tmp_path / "tasks.db"
    async with KlingService.open(settings_for(sandbox, db), schedule=FAST) as service:
        ids = await submit_batch(service, receiver.url, 4)
    env = poller_env(sandbox.url, sandbox.api_key, f"sqlite:///{db}", {"lease_seconds": 60, "stop_grace_seconds": 0.5})
    log = tmp_path / "poller.log"
    poller = start_kling3(["-v", "poller"], env, log)
    await eventually(lambda: stats(sandbox)["requests"].get("status", 0) >= 4, timeout=30)  # 4 checks in flight
    stopping = time.monotonic()
    poller.send_signal(signal.SIGTERM)
    assert poller.wait(timeout=20) == 0
    assert time.monotonic() - stopping < 10
    store = SQLiteTaskStore(db)
    leased = store._db.execute("SELECT COUNT(*) AS n FROM tasks WHERE lease_owner IS NOT NULL").fetchone()["n"]
    assert leased == 0, log.read_text()  # no task waits out a 60 s lease
    assert "released 4 unfinished tasks" in log.read_text()

    set_options(sandbox, status_delay=0)
    successor = start_kling3(["poller"], env, tmp_path / "successor.log")
    try:
        await eventually(lambda: len(receiver.events) == len(ids), timeout=20)  # well inside one lease
    finally:
        successor.terminate()
        successor.wait(timeout=20)
