"""What the PostgreSQL store's retrying connections (`store.pg_connections`) cost a statement that meets no
outage: a one-row read through the store against the same read on its pool directly, interleaved in one run
on a throwaway cluster (target ≤ 1.05×).

    python -m benchmarks.store_connections [--reads 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from psycopg.rows import dict_row

from harness.postgres import PostgresCluster, find_bindir
from kling3_tools.adapters.store import open_store
from kling3_tools.adapters.store.postgres import PostgresTaskStore

SQL = "SELECT 1 AS one"


async def per_read(read: Callable[[], Awaitable[object]], reads: int) -> float:
    started = time.perf_counter()
    for _ in range(reads):
        await read()
    return (time.perf_counter() - started) / reads * 1e6


async def run(reads: int, rounds: int) -> None:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("needs the PostgreSQL server binaries (initdb, postgres)")
    cluster = PostgresCluster(bindir).start()
    try:
        store = await open_store(await asyncio.to_thread(cluster.migrated_database))
        assert isinstance(store, PostgresTaskStore)
        pool = store._db.pool

        async def through_the_store() -> object:
            return await store._rows(SQL, {})

        async def on_the_pool() -> object:
            async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(SQL, {})
                return await cursor.fetchall()

        ratios = []
        for _ in range(rounds):
            ours, bare = await per_read(through_the_store, reads), await per_read(on_the_pool, reads)
            ratios.append(ours / bare)
            print(f"through the store {ours:.0f} µs, on the pool {bare:.0f} µs: {ours / bare:.2f}×")
        print(f"median of {rounds} rounds: {statistics.median(ratios):.2f}×")
        await store.close()
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(run(args.reads, args.rounds))


if __name__ == "__main__":
    main()
