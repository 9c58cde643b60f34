"""What `[metrics] listen` costs: a poller's deliveries per second with metrics off and on, and a scrape of
`/metrics` on a large store, in one run.

    python -m benchmarks.metrics [--tasks 1000] [--rounds 5] [--rows 100000]

Throughput: one sandbox in its own process finishes every task 0.2 s after it is submitted and answers at once; a poller
in this process (concurrency 8, its rate limit out of the way) follows `--tasks` CLI tasks submitted to a
fresh SQLite file until each is delivered. Rounds alternate between metrics off (the no-op observer) and on
(every event counted, every store call timed); the best round of each is compared.

Scrape: `--rows` tasks in a SQLite file, then the time a `/metrics` scrape takes (the store's figures read
again each time), median of 20.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from harness.helpers import eventually, free_port
from kling3_tools.config import Settings
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import CliOrigin, Delivery, Outcome, TaskRecord
from kling3_tools.domain.tasks import Task
from kling3_tools.ops.endpoints import serving
from kling3_tools.ops.metrics import PrometheusObserver
from kling3_tools.service import KlingService

from .common import SANDBOX_KEY, sandbox_process

REQUEST = GenerateRequest.build(type="std-text-to-video", prompt="benchmark", duration=3, sound=False)


def settings_for(url: str, store: Path, listen: str = "") -> Settings:
    return Settings.load(
        api_key=SANDBOX_KEY,
        base_url=url,
        store={"url": f"sqlite:///{store}"},
        poller={"rate_limit_per_second": 100_000, "dense_interval_seconds": 0.01, "expected_seconds": [0.01, 0.02]},
        metrics={"listen": listen},
    )


async def deliveries_per_second(url: str, folder: Path, tasks: int, *, metrics: bool) -> float:
    store = folder / f"{time.monotonic_ns()}.db"
    settings = settings_for(url, store)
    observer = PrometheusObserver("benchmark", 100_000) if metrics else None
    async with KlingService.open(settings, observer=observer) as service:
        for first in range(0, tasks, 100):
            await asyncio.gather(*(service.submit(REQUEST) for _ in range(first, min(first + 100, tasks))))
        poller = service.poller()
        started = time.perf_counter()
        running = asyncio.create_task(poller.run())
        await eventually(lambda: all_delivered(service), timeout=3600)
        took = time.perf_counter() - started
        poller.stop()
        await running
    return tasks / took


async def all_delivered(service: KlingService) -> bool:
    stats = await service.store.stats()
    return stats.running == 0 and stats.to_deliver == 0


async def scrape_seconds(url: str, folder: Path, rows: int) -> list[float]:
    listen = f"127.0.0.1:{free_port()}"
    settings = settings_for(url, folder / "large.db", listen)
    observer = PrometheusObserver("benchmark", 5)
    async with KlingService.open(settings, observer=observer) as service:
        now = time.time()
        for first in range(0, rows, 5000):
            batch = []
            for i in range(first, min(first + 5000, rows)):
                task = Task(task_id=f"row{i}", status="IN_PROGRESS", consumed_credits=REQUEST.estimated_credits())
                record = TaskRecord.submitted(task, REQUEST, api_url=service.api_url, origin=CliOrigin())
                if i % 10:  # 90 % delivered long ago, 10 % running
                    record.finish(Outcome.SUCCEEDED, now - i)
                    record.delivery, record.due_at = Delivery.DELIVERED, None
                else:
                    record.due_at = now + 3600
                batch.append(record)
            await asyncio.gather(*(service.store.add(record) for record in batch))
        async with serving(service), httpx.AsyncClient() as http:
            times = []
            for _ in range(20):
                observer.figures.latest = None  # read the store again, as a scrape after STATS_MAX_AGE does
                started = time.perf_counter()
                answer = await http.get(f"http://{listen}/metrics")
                times.append(time.perf_counter() - started)
                if answer.status_code != 200 or b"kling3_tasks" not in answer.content:
                    raise SystemExit(f"/metrics answered {answer.status_code}: {answer.text[:200]}")
    return times


async def main(args: argparse.Namespace) -> None:
    with sandbox_process(finish_seconds=0.2, starting_balance=str(10**12)) as url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        best = {False: 0.0, True: 0.0}
        for round_ in range(args.rounds):
            for metrics in (False, True) if round_ % 2 == 0 else (True, False):
                rate = await deliveries_per_second(url, folder, args.tasks, metrics=metrics)
                best[metrics] = max(best[metrics], rate)
                print(f"round {round_ + 1}: metrics {'on ' if metrics else 'off'} {rate:,.0f} deliveries/s", flush=True)
        off, on = best[False], best[True]
        print(f"\ndeliveries/s, best of {args.rounds}: off {off:,.0f}, on {on:,.0f}: {(off / on - 1) * 100:+.1f} %")
        times = await scrape_seconds(url, folder, args.rows)
        print(
            f"/metrics scrape with {args.rows:,} tasks (SQLite, figures read each time): "
            f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
