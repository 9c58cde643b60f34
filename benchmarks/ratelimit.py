"""The shared request budget on PostgreSQL, as workers see it: the first second after an idle spell, and the
transactions the bucket costs while many workers wait, in one run on a throwaway cluster.

    python -m benchmarks.ratelimit [--rate 10] [--workers 50] [--seconds 5]

Each simulated worker is a limiter of its own (as a worker process has), all on one `rate_limits` row:
- burst: three workers idle for two seconds, then take as fast as they can for one second; requests in
  that second against the rate (target ≤ 1.1×);
- waiting: `--workers` workers take as fast as they can for `--seconds`; requests per second (the rate)
  and bucket transactions per second (one per request; before, every waiter retried whenever a token
  might be there).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from harness.postgres import PostgresCluster, find_bindir
from kling3_tools.adapters.store import migrate_postgres
from kling3_tools.adapters.store.pg_ratelimit import PostgresRateLimiter
from kling3_tools.adapters.store.postgres import PostgresTaskStore


class Counted(PostgresRateLimiter):
    transactions = 0  # row-locked, one per take
    reads = 0  # after a wait, whether a 429 pause began meanwhile

    async def _reserve(self, most: int) -> tuple[int, float]:
        Counted.transactions += 1
        return await super()._reserve(most)

    async def _sit_out_a_pause(self) -> None:
        Counted.reads += 1
        await super()._sit_out_a_pause()


async def takes_within(limiters: list[PostgresRateLimiter], seconds: float) -> list[float]:
    """When each take returned, taking as fast as possible for `seconds`."""
    stamps: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker(limiter: PostgresRateLimiter) -> None:
        while time.monotonic() < deadline:
            await limiter.take()
            stamps.append(time.monotonic())

    await asyncio.gather(*(worker(limiter) for limiter in limiters))
    return stamps


async def main(rate: float, workers: int, seconds: float) -> None:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("needs the PostgreSQL server binaries (initdb, postgres)")
    cluster = PostgresCluster(bindir).start()
    try:
        url = cluster.new_database()
        await migrate_postgres(url)
        store = await PostgresTaskStore.open(url, pool_size=min(workers, 50))
        pool = store._db
        burst = [Counted(pool, "http://burst.bench", rate) for _ in range(3)]
        await takes_within(burst, 0.5)
        await asyncio.sleep(2.0)  # idle: the bucket refills to its burst
        started = time.monotonic()
        first = [t for t in await takes_within(burst, 1.2) if t - started <= 1.0]
        print(f"first second after idle, 3 workers at {rate:g}/s: {len(first)} requests = {len(first) / rate:.2f}x")

        many = [Counted(pool, "http://many.bench", rate) for _ in range(workers)]
        Counted.transactions = Counted.reads = 0
        started = time.monotonic()
        stamps = await takes_within(many, seconds)
        took = time.monotonic() - started  # the last takes were granted past `seconds`, at the rate
        print(
            f"{workers} workers for {took:.1f} s at {rate:g}/s: {len(stamps) / took:.1f} requests/s, "
            f"{Counted.transactions / took:.1f} row-locked bucket transactions/s and {Counted.reads / took:.1f} "
            "pause reads/s"
        )
        await store.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5)
    options = parser.parse_args()
    asyncio.run(main(options.rate, options.workers, options.seconds))
