"""Submissions per second through the spend ledger vs the unguarded path it replaced, in one run.

    python -m benchmarks.ledger [--submitters 50] [--submissions 1000] [--rounds 3] [--no-postgres]
                                [--generate-delay SECONDS] [--volumes 1000,10000,50000]

Both paths run against one sandbox in its own process, on the same store:
- unguarded: POST, then insert the task (what `KlingService.submit` did before the ledger);
- ledger: reserve under a `[budget] daily_credits` limit (the budget query and the attempt insert in one
  locked transaction), POST, then settle (the task insert and the attempt update in one transaction).
Rounds alternate between the paths and the best round of each is compared. Both backends: a SQLite
file, and a throwaway PostgreSQL cluster when its server binaries are installed. By default the sandbox
answers a generate at once (the worst case for the ledger, whose extra round trip is then a large share
of the total); `--generate-delay 0.05` holds each answer 50 ms, still far quicker than the real API.

Then, on a fresh store of each backend, one reservation under a `[budget]` limit is timed with 1,000, 10,000
and 50,000 tasks submitted evenly over the last 24 hours (`--volumes`): the budget is a sum over that window
(hourly totals, plus the tasks of the window's first, partial hour one by one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx

from harness.postgres import PostgresCluster, find_bindir
from kling3_tools.adapters.client import AsyncKlingClient
from kling3_tools.adapters.store import TaskStore, migrate_postgres, open_store
from kling3_tools.config import Settings
from kling3_tools.domain.ledger import DAY_SECONDS, Attempt, AttemptState, Scope, SpendLimit
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import CliOrigin, TaskRecord
from kling3_tools.domain.tasks import Task
from kling3_tools.service import KlingService

from .common import SANDBOX_KEY, sandbox_process

GOLDEN_RATIO = (5**0.5 - 1) / 2
REQUEST = GenerateRequest.build(type="std-text-to-video", prompt="benchmark", duration=3, sound=False)


async def rate(submit: Callable[[], Awaitable[object]], submitters: int, submissions: int) -> float:
    per_submitter = submissions // submitters

    async def submitter() -> None:
        for _ in range(per_submitter):
            await submit()

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(submitters)))
    return per_submitter * submitters / (time.perf_counter() - started)


@contextlib.asynccontextmanager
async def service_on(url: str, store_url: str) -> AsyncIterator[KlingService]:
    settings = Settings.load(api_key=SANDBOX_KEY, base_url=url, budget={"daily_credits": 10**12})
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as http:
        store: TaskStore = await open_store(store_url, pool_size=20)
        try:
            yield KlingService(
                AsyncKlingClient(SANDBOX_KEY, base_url=url, http_client=http), store, settings, http=http
            )
        finally:
            await store.close()


async def compare(url: str, store_url: str, *, submitters: int, submissions: int, rounds: int) -> tuple[float, float]:
    async with service_on(url, store_url) as service:

        async def unguarded() -> None:
            task = await service.client.generate(REQUEST)
            record = TaskRecord.submitted(task, REQUEST, api_url=service.base_url, origin=CliOrigin())
            record.due_at = await service.scheduler.next_check(record, record.submitted_at)
            await service.store.add(record)

        async def through_the_ledger() -> None:
            await service.submit(REQUEST)

        await rate(unguarded, submitters, submitters * 2)  # warm the pools
        await rate(through_the_ledger, submitters, submitters * 2)
        bare, ledger = [], []
        for _ in range(rounds):
            bare.append(await rate(unguarded, submitters, submissions))
            ledger.append(await rate(through_the_ledger, submitters, submissions))
    return max(bare), max(ledger)


async def reservation_by_volume(store_url: str, volumes: list[int], reservations: int = 200) -> list[float]:
    """Median ms of one reservation under a `[budget]` limit (its 24-hour sum and the attempt's insert, in one
    locked transaction) with `volume` tasks submitted in the last 24 hours, for each volume."""
    store = await open_store(store_url, pool_size=4)
    budget = SpendLimit("budget", Scope(), daily_credits=10**12)
    medians, recorded = [], 0
    try:
        for volume in volumes:
            while recorded < volume:
                batch = range(recorded, min(volume, recorded + 100))
                await asyncio.gather(*(store.add(submitted(n)) for n in batch))
                recorded += len(batch)
            timings = []
            for _ in range(reservations):
                attempt = Attempt.new(REQUEST, api_url="benchmark", origin=CliOrigin(), deadline=60)
                started = time.perf_counter()
                await store.reserve(attempt, [budget])
                timings.append(time.perf_counter() - started)
                await store.close_attempt(attempt.attempt_id, AttemptState.RELEASED, "benchmark")
            medians.append(statistics.median(timings) * 1000)
    finally:
        await store.close()
    return medians


def submitted(n: int) -> TaskRecord:
    """The `n`th task of the volume, at a time spread evenly over the last 24 hours whatever the volume."""
    task = Task(task_id=f"n75volume{n}", status="IN_PROGRESS", type=REQUEST.type.value, consumed_credits=150)
    record = TaskRecord.submitted(task, REQUEST, api_url="benchmark", origin=CliOrigin())
    record.submitted_at -= DAY_SECONDS * (n * GOLDEN_RATIO % 1)
    return record


def report(backend: str, bare: float, ledger: float, rounds: int) -> None:
    print(f"{backend:10} unguarded {bare:7.0f}/s   ledger {ledger:7.0f}/s   cost {bare / ledger - 1:+.1%}")


async def main(
    submitters: int, submissions: int, rounds: int, postgres: bool, generate_delay: float, volumes: list[int]
) -> None:
    print(
        f"{submitters} concurrent submitters, best of {rounds} rounds of {submissions} submissions, "
        f"generate answered after {generate_delay * 1000:.0f} ms (target: <10 %)"
    )
    with (
        sandbox_process(finish_seconds=3600, starting_balance=str(10**12), generate_delay=str(generate_delay)) as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        stores: dict[str, Callable[[str], str]] = {"SQLite": lambda name: f"sqlite:///{Path(tmp) / name}.db"}
        bindir = find_bindir() if postgres else None
        cluster = PostgresCluster(bindir).start() if bindir is not None else None
        if cluster is not None:
            stores["PostgreSQL"] = lambda name: cluster.new_database()
        try:
            for backend, new_store in stores.items():
                store_url = new_store("throughput")
                if backend == "PostgreSQL":
                    await migrate_postgres(store_url)
                bare, ledger = await compare(
                    url, store_url, submitters=submitters, submissions=submissions, rounds=rounds
                )
                report(backend, bare, ledger, rounds)
                if volumes:
                    store_url = new_store("volume")
                    if backend == "PostgreSQL":
                        await migrate_postgres(store_url)
                    medians = await reservation_by_volume(store_url, volumes)
                    by_volume = ", ".join(f"{v:,} tasks {ms:.2f} ms" for v, ms in zip(volumes, medians, strict=True))
                    print(f"{backend:10} one reservation under a budget, by the last 24 hours' volume: {by_volume}")
        finally:
            if cluster is not None:
                cluster.stop()
        if postgres and cluster is None:
            print("PostgreSQL skipped (no server binaries)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submitters", type=int, default=50)
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    parser.add_argument("--generate-delay", type=float, default=0.0, help="seconds the sandbox holds each generate")
    parser.add_argument(
        "--volumes", default="1000,10000,50000", help="tasks in the last 24 hours at which to time a reservation"
    )
    args = parser.parse_args()
    volumes = [int(v) for v in args.volumes.split(",") if v]
    asyncio.run(main(args.submitters, args.submissions, args.rounds, args.postgres, args.generate_delay, volumes))
