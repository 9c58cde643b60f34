"""Several poller worker processes sharing one PostgreSQL store, with one killed mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time

import psycopg
import pytest

from harness.helpers import SECRET, eventually, start_kling3
from kling3_tools.config import Settings
from kling3_tools.service import KlingService
from kling3_tools.workflows.poller import Poller

from .conftest import set_options, stats
from .support import FAST, LEASE_SECONDS, delivered, submit, worker_env


async def test_three_workers_one_killed_deliver_every_task_once(sandbox, receiver, postgres_url, tmp_path):
    set_options(sandbox, finish_seconds=3.0, finish_spread=0.8, failure_rate=0.1)
    settings = Settings.load(api_key=sandbox.api_key, base_url=sandbox.url, store={"url": postgres_url})
    async with KlingService.open(settings, schedule=FAST) as service:
        ids = await submit(service, receiver.url, 500)
        env = worker_env(sandbox, postgres_url)
        logs = [tmp_path / f"worker{i}.log" for i in range(3)]
        workers = [start_kling3(["-v", "poller"], env, log) for log in logs]
        try:
            await eventually(lambda: len(receiver.events) >= 150, timeout=120)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            killed_at = time.time()
            delivered_before_kill = await delivered(service)
            assert len(delivered_before_kill) < len(ids), "the kill did not land mid-run"

            async def all_done() -> bool:
                return len(await delivered(service)) == len(ids)

            await eventually(all_done, timeout=180)
            left = [task_id for task_id in ids if task_id not in delivered_before_kill]

            def all_logged() -> bool:  # a log line follows its mark: stopping at once could cut the last ones off
                text = logs[1].read_text() + logs[2].read_text()
                return all(f"delivered {task_id} " in text for task_id in left)

            await eventually(all_logged, timeout=20)
        finally:
            for worker in workers[1:]:
                worker.send_signal(signal.SIGINT)
            for worker in workers[1:]:
                worker.wait(timeout=20)

    # Every task reached the receiver, each under one event id; repeats are only those in flight at the kill.
    counts = receiver.counts()
    assert set(counts) == set(ids)
    event_ids: dict[str, set[str]] = {}
    for event in receiver.events:
        event_ids.setdefault(event["task"]["task_id"], set()).add(event["event_id"])
    assert all(len(events) == 1 for events in event_ids.values())  # a receiver dedupes repeats by event id
    repeated = {task_id for task_id, n in counts.items() if n > 1}
    print(f"{len(repeated)} tasks were sent twice (in flight at the kill)")
    assert len(repeated) <= 8  # at most the killed worker's jobs in flight (its concurrency)
    assert not repeated & delivered_before_kill  # marked delivered: never sent again
    # No task was ever polled by two workers at the same moment.
    assert stats(sandbox)["max_concurrent_polls_of_one_task"] == 1
    # The dead worker's leases ran out and others finished its tasks; everyone did a share of the work.
    with psycopg.connect(postgres_url) as conn:
        left = conn.execute("SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL OR due_at IS NOT NULL")
        assert left.fetchone() == (0,)
    logged = [log.read_text() for log in logs]
    assert all(text.count("delivered ") > 0 for text in logged)
    everything = "".join(logged)
    for task_id in ids:  # one line per delivered mark; the kill may cut off the line of a mark just written
        lines = everything.count(f"delivered {task_id} ")
        assert (lines == 1) if task_id in left else (lines <= 1)
    assert not any("Traceback" in text for text in logged)
    assert time.time() - killed_at > LEASE_SECONDS


@pytest.mark.process
async def test_workers_flag_supervises_and_restarts_a_dead_worker(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=2.0, finish_spread=0.5)
    db = tmp_path / "t.db"
    settings = Settings.load(api_key=sandbox.api_key, base_url=sandbox.url, store={"url": f"sqlite:///{db}"})
    async with KlingService.open(settings, schedule=FAST) as service:
        ids = await submit(service, receiver.url, 40)
        log = tmp_path / "supervisor.log"
        supervisor = start_kling3(["poller", "--workers", "2"], worker_env(sandbox, f"sqlite:///{db}"), log)
        try:
            await eventually(lambda: len(re.findall(r"started \(pid (\d+)\)", log.read_text())) == 2, timeout=30)
            first_pid = int(re.findall(r"started \(pid (\d+)\)", log.read_text())[0])
            os.kill(first_pid, signal.SIGKILL)
            await eventually(lambda: "worker 0 exited with code -9; restarting" in log.read_text(), timeout=30)
            await eventually(lambda: len(re.findall(r"started \(pid (\d+)\)", log.read_text())) == 3, timeout=30)

            async def all_done() -> bool:
                return len(await delivered(service)) == len(ids)

            await eventually(all_done, timeout=90)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            assert supervisor.wait(timeout=20) is not None
    pids = [int(p) for p in re.findall(r"started \(pid (\d+)\)", log.read_text())]
    for pid in pids:  # the supervisor took its workers down with it
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert set(receiver.counts()) == set(ids)


async def test_an_idle_worker_is_woken_by_a_task_added_elsewhere(sandbox, receiver, postgres_url):
    """No sweep for two minutes: only the NOTIFY from another process's insert can start the work."""
    set_options(sandbox, finish_seconds=0.2)
    settings = Settings.load(
        api_key=sandbox.api_key,
        base_url=sandbox.url,
        store={"url": postgres_url},
        poller={"webhook_secret": SECRET, "rate_limit_per_second": 100},
    )
    async with (
        KlingService.open(settings, schedule=FAST) as worker,
        KlingService.open(settings, schedule=FAST) as front_end,  # first check 0.2 s after submission
    ):
        poller = Poller(
            worker.client, worker.store, worker.notifiers, worker.scheduler, worker.settings.poller, idle_seconds=120
        )
        job = asyncio.create_task(poller.run())
        try:
            await asyncio.sleep(0.5)  # the worker has looked, found nothing, and gone to sleep
            [task_id] = await submit(front_end, receiver.url, 1)
            await eventually(lambda: task_id in receiver.counts(), timeout=20)
        finally:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
