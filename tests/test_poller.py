"""The poller against the real sandbox over loopback, a real SQLite file and a real webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.helpers import eventually, poller_env, start_kling3
from kling3_tools.adapters.ratelimit import TokenBucket
from kling3_tools.adapters.sandbox.app import SAMPLE_VIDEO
from kling3_tools.adapters.store import SQLiteTaskStore
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import Delivery, Outcome
from kling3_tools.service import KlingService
from kling3_tools.workflows.poller import Poller

from .conftest import set_options, stats
from .support import FAST, settings_for, submit_batch


@contextlib.asynccontextmanager
async def running(service: KlingService) -> AsyncIterator[None]:
    job = asyncio.create_task(service.poller().run())
    try:
        yield
    finally:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job


async def all_delivered(store: SQLiteTaskStore, ids: list[str]) -> bool:
    records = [await store.get(task_id) for task_id in ids]
    return all(r is not None and r.delivery is Delivery.DELIVERED for r in records)


async def test_mixed_batch_is_delivered_exactly_once_with_valid_signatures(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=0.6, finish_spread=0.5, failure_rate=0.3)
    async with KlingService.open(settings_for(sandbox, tmp_path / "t.db"), schedule=FAST) as service:
        ids = await submit_batch(service, receiver.url, 20)
        async with running(service):
            await eventually(lambda: all_delivered(service.store, ids))
        records = [await service.store.get(task_id) for task_id in ids]
    assert receiver.counts() == dict.fromkeys(ids, 1)
    assert receiver.bad_signatures == 0
    events = {e["task"]["task_id"]: e for e in receiver.events}
    failed = [r for r in records if r.outcome is Outcome.FAILED]
    succeeded = [r for r in records if r.outcome is Outcome.SUCCEEDED]
    assert failed, "the sandbox's failure share produced no failure; the test proves nothing"
    assert succeeded
    for record in failed:
        assert events[record.task_id]["event"] == "task.failed"
        assert "simulated generation failure" in events[record.task_id]["task"]["error_message"]
    for record in succeeded:
        assert events[record.task_id]["task"]["video_urls"] == record.video_urls != []
    assert stats(sandbox)["max_concurrent_polls_of_one_task"] == 1
    # every status check is counted on its task (the history that schedules and capacity are measured from)
    assert sum(record.poll_count for record in records) == stats(sandbox)["requests"]["status"] > 0


async def test_destination_down_for_a_while_gets_everything_once_back(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=0.3)
    receiver.failing = True
    async with KlingService.open(settings_for(sandbox, tmp_path / "t.db"), schedule=FAST) as service:
        ids = await submit_batch(service, receiver.url, 5)
        async with running(service):

            async def all_refused_once() -> bool:
                records = [await service.store.get(i) for i in ids]
                return all(r.delivery_attempts >= 1 for r in records)

            await eventually(all_refused_once)
            receiver.failing = False
            await eventually(lambda: all_delivered(service.store, ids))
        records = [await service.store.get(task_id) for task_id in ids]
    assert receiver.refused >= 5
    assert receiver.counts() == dict.fromkeys(ids, 1)
    assert all(r.delivery_error is None for r in records)


async def test_a_429_storm_loses_and_duplicates_nothing(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=0.5)
    async with KlingService.open(settings_for(sandbox, tmp_path / "t.db"), schedule=FAST) as service:
        ids = await submit_batch(service, receiver.url, 12)
        set_options(sandbox, rate_limit_per_second=4, rate_limit_burst=2)
        async with running(service):
            await eventually(lambda: all_delivered(service.store, ids), timeout=60)
    assert stats(sandbox)["rejections"].get("RATE_LIMITED", 0) > 0
    assert receiver.counts() == dict.fromkeys(ids, 1)


async def test_two_pollers_on_one_file_never_poll_one_task_at_once(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=0.8, finish_spread=0.5, status_delay=0.05)
    settings = settings_for(sandbox, tmp_path / "t.db")
    async with (
        KlingService.open(settings, schedule=FAST) as first,
        KlingService.open(settings, schedule=FAST) as second,
    ):
        ids = await submit_batch(first, receiver.url, 20)
        async with running(first), running(second):
            await eventually(lambda: all_delivered(first.store, ids))
    counters = stats(sandbox)
    assert counters["max_concurrent_polls_of_one_task"] == 1
    assert counters["requests"]["status"] >= 40
    assert receiver.counts() == dict.fromkeys(ids, 1)


async def test_a_task_running_too_long_is_reported_as_timed_out(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=60)
    settings = settings_for(sandbox, tmp_path / "t.db", max_task_minutes=0.01)
    async with KlingService.open(settings, schedule=FAST) as service:
        [task_id] = await submit_batch(service, receiver.url, 1)
        async with running(service):
            await eventually(lambda: all_delivered(service.store, [task_id]))
    [event] = receiver.events
    assert event["event"] == "task.timed_out"
    assert task_id in event["task"]["error_message"]
    assert "may still finish and bill" in event["task"]["error_message"]


async def test_finished_videos_are_downloaded_when_asked(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=0.2)
    settings = settings_for(sandbox, tmp_path / "t.db", download=True, media_dir=str(tmp_path / "media"))
    async with KlingService.open(settings, schedule=FAST) as service:
        [task_id] = await submit_batch(service, receiver.url, 1)
        async with running(service):
            await eventually(lambda: all_delivered(service.store, [task_id]))
        record = await service.store.get(task_id)
    assert record.local_path == str(tmp_path / "media" / f"{task_id}.mp4")
    assert Path(record.local_path).read_bytes() == SAMPLE_VIDEO
    assert receiver.events[0]["task"]["local_path"] == record.local_path


async def test_a_task_the_api_no_longer_knows_is_never_refunded_by_us(sandbox, tmp_path):
    settings = settings_for(sandbox, tmp_path / "t.db", max_task_minutes=0.02)
    async with KlingService.open(settings, schedule=FAST) as service:
        record = await service.submit(GenerateRequest.build(type="pro-text-to-video", prompt="x"))
        ghost = record.model_copy(update={"task_id": "n75ghost", "due_at": time.time()})
        await service.store.add(ghost)
        async with running(service):
            await eventually(lambda: all_delivered(service.store, ["n75ghost", record.task_id]))
        ghost = await service.store.get("n75ghost")
    assert ghost.outcome is Outcome.TIMED_OUT  # it still counts against budgets: it may have been billed
    assert "no longer knows" in ghost.error_message


async def test_submit_records_the_task_before_returning(sandbox, tmp_path):
    async with KlingService.open(settings_for(sandbox, tmp_path / "t.db"), schedule=FAST) as service:
        record = await service.submit(
            GenerateRequest.build(type="o3-pro-video-edit", prompt="x", video="https://e.com/v.mp4")
        )
        stored = await SQLiteTaskStore(tmp_path / "t.db").get(record.task_id)
    assert stored is not None
    assert stored.estimated_credits == stored.consumed_credits == 435
    assert stored.due_at is not None and stored.due_at > stored.submitted_at


async def test_token_bucket_spaces_acquisitions():
    bucket = TokenBucket(rate=20, burst=3)
    assert await bucket.take(5) == 3  # the burst
    started = time.monotonic()
    for _ in range(5):
        assert await bucket.take() == 1
    assert time.monotonic() - started >= 5 / 20 * 0.9
    await bucket.pause(0.2)
    paused = time.monotonic()
    await bucket.take()
    assert time.monotonic() - paused >= 0.19
    slow = TokenBucket(rate=0.001, burst=3)
    assert await slow.take(3) == 3
    await slow.give_back(2)
    assert await slow.take(5) == 2


async def test_a_delivery_longer_than_the_lease_keeps_it_and_is_sent_once(sandbox, receiver, tmp_path):
    """The lease is renewed while a job runs: a second poller must not take a task whose slow upload outlasts it."""
    set_options(sandbox, finish_seconds=0.2)
    receiver.answer_after = 3.0
    settings = settings_for(sandbox, tmp_path / "t.db", lease_seconds=1)
    async with KlingService.open(settings, schedule=FAST) as service:
        ids = await submit_batch(service, receiver.url, 3)
        async with running(service), running(service):
            await eventually(lambda: all_delivered(service.store, ids), timeout=30)
    assert receiver.counts() == dict.fromkeys(ids, 1)


# --- a real subprocess, killed with SIGKILL mid-batch -------------------------------------


def start_poller(sandbox, db: Path, log: Path) -> subprocess.Popen[bytes]:
    poller = {
        "lease_seconds": 1,
        "rate_limit_per_second": 100,
        "expected_seconds": [0.2, 3.0],
        "dense_interval_seconds": 0.2,
        "max_interval_seconds": 0.5,
    }
    return start_kling3(["poller"], poller_env(sandbox.url, sandbox.api_key, f"sqlite:///{db}", poller), log)


@pytest.mark.process
async def test_sigkill_and_restart_loses_nothing_and_redelivers_nothing_delivered(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=2.0, finish_spread=0.9)
    db = tmp_path / "t.db"
    async with KlingService.open(settings_for(sandbox, db), schedule=FAST) as service:
        ids = await submit_batch(service, receiver.url, 40)
        first = start_poller(sandbox, db, tmp_path / "first.log")
        try:
            await eventually(lambda: len(receiver.events) >= 10, timeout=60)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        delivered_before_kill = {
            r.task_id for r in [await service.store.get(i) for i in ids] if r.delivery is Delivery.DELIVERED
        }
        seen_before_restart = receiver.counts()
        assert 0 < len(delivered_before_kill) < len(ids), "the kill did not land mid-batch"
        second_log = tmp_path / "second.log"
        second = start_poller(sandbox, db, second_log)
        left = [task_id for task_id in ids if task_id not in delivered_before_kill]
        try:
            await eventually(lambda: all_delivered(service.store, ids), timeout=90)
            # Its log line follows the delivered mark: stopping it at once could cut the last one off.
            await eventually(lambda: all(f"delivered {i} " in second_log.read_text() for i in left), timeout=10)
        finally:
            second.send_signal(signal.SIGINT)
            second.wait(timeout=10)
    counts = receiver.counts()
    assert set(counts) == set(ids)
    for task_id in delivered_before_kill:
        assert counts[task_id] == 1  # marked delivered before the kill: never sent again
    duplicates = {task_id for task_id, n in counts.items() if n > 1}
    assert len(duplicates) <= 8  # at most the jobs in flight at the kill (the poller's concurrency)
    assert all(counts[task_id] == 2 for task_id in duplicates)  # and each of them once more, no more
    assert not duplicates & delivered_before_kill
    for task_id in duplicates:  # a receiver can drop the repeat by its stable event id
        assert len({e["event_id"] for e in receiver.events if e["task"]["task_id"] == task_id}) == 1
    assert sum(seen_before_restart.values()) >= 10
    logged = (tmp_path / "first.log").read_text() + second_log.read_text()
    for task_id in ids:
        lines = logged.count(f"delivered {task_id} ")
        # One line per delivered mark; the kill may cut off the line of a mark the first poller had just written.
        assert (lines == 1) if task_id in left else (lines <= 1)
    assert "Traceback" not in logged


async def test_a_full_pipeline_never_sleeps_while_work_is_due(sandbox, receiver, tmp_path):
    """Regression: jobs finishing while the loop queried the store left it asleep for `idle_seconds`."""

    class SlowToAnswerNextDue(SQLiteTaskStore):
        async def next_due(self, *, api_url: str, kinds: list[str]) -> float | None:
            await asyncio.sleep(0.2)  # every job in flight finishes meanwhile
            return await super().next_due(api_url=api_url, kinds=kinds)

    set_options(sandbox, finish_seconds=0.3)
    async with KlingService.open(settings_for(sandbox, tmp_path / "t.db"), schedule=FAST) as service:
        ids = await submit_batch(service, receiver.url, 6)
        store = SlowToAnswerNextDue(tmp_path / "t.db")
        poller = Poller(
            service.client, store, service.notifiers, service.scheduler, service.settings.poller,
            concurrency=2, idle_seconds=120,
        )  # fmt: skip
        job = asyncio.create_task(poller.run())
        try:
            await eventually(lambda: all_delivered(service.store, ids), timeout=60)
        finally:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
            await store.close()
    assert receiver.counts() == dict.fromkeys(ids, 1)
