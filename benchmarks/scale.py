"""PostgreSQL at scale: the claim query on 100,000 tasks, throughput of 1/2/4 workers, failover after SIGKILL.

    python -m benchmarks.scale [--tasks 100000] [--deliveries 1200] [--lease 5]

Everything is real and local: a throwaway PostgreSQL cluster (initdb on a
loopback port, as in the tests), the sandbox and each worker (`kling3
poller`) in their own processes, webhooks to a receiver in this process.

1. Claim: --tasks tracked tasks, 10 % of them due. Each claim leases 8 due
   tasks, which are then saved as a poll would save them (lease released,
   next check in a minute); only the claim is timed. The plan must walk the
   `tasks_due` index, not scan the table.
2. Throughput: the sandbox holds every status answer 200 ms, so the API's
   latency, not the CPU, bounds each worker (8 checks in flight). Tasks are
   finished when first checked: one check and one webhook each. Deliveries
   per second over the middle 80 % of the run.
3. Failover: two workers follow tasks that never finish; one is killed with
   SIGKILL; how long until each task it held is claimed by the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg

from harness.helpers import poller_env
from harness.postgres import PostgresCluster, find_bindir
from kling3_tools.adapters.store.postgres import CLAIM_SQL, PostgresTaskStore
from kling3_tools.adapters.store.rows import COLUMNS, record_to_row
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import AnyOrigin, CliOrigin, McpOrigin, TaskRecord
from kling3_tools.domain.tasks import Task

from .common import SANDBOX_KEY, sandbox_process
from .poller import Receiver, percentile, stop, submit

API = "http://127.0.0.1:9"  # part 1 never calls the API
KINDS = ["cli", "webhook"]


# --- 1. the claim query ------------------------------------------------------------------


def fill(url: str, count: int, due_share: float, *, origin: AnyOrigin | None = None, prefix: str = "n75") -> None:
    request = GenerateRequest.build(type="std-text-to-video", prompt="a fox", duration=5)
    template = TaskRecord.submitted(
        Task(task_id="n75template", status="IN_PROGRESS"), request, api_url=API, origin=origin or CliOrigin()
    )
    row = record_to_row(template)
    now = time.time()
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY tasks ({', '.join(COLUMNS)}) FROM STDIN") as copy:  # type: ignore[arg-type]
            for i in range(count):
                due = now - random.uniform(0, 60) if i < count * due_share else now + random.uniform(60, 3600)
                copy.write_row([{**row, "task_id": f"{prefix}{i:012d}", "due_at": due}[c] for c in COLUMNS])
        conn.commit()
        cursor.execute("ANALYZE tasks")
        conn.commit()


async def time_claims(url: str, rounds: int) -> dict[str, Any]:
    store = await PostgresTaskStore.open(url)
    claims: list[float] = []
    next_dues: list[float] = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            now = time.time()
            records = await store.claim(owner="bench", now=now, lease_seconds=60, limit=8, api_url=API, kinds=KINDS)
            claims.append(time.perf_counter() - started)
            for record in records:
                record.poll_count += 1
                record.due_at = time.time() + 60
                await store.save(record, owner="bench")
            started = time.perf_counter()
            await store.next_due(api_url=API, kinds=KINDS)
            next_dues.append(time.perf_counter() - started)
    finally:
        await store.close()
    params = {"api_url": API, "now": time.time(), "kinds": KINDS, "limit": 8, "owner": "plan", "until": 0}
    with psycopg.connect(url) as conn:
        plan_rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {CLAIM_SQL}", params).fetchall()  # type: ignore[arg-type]
        conn.rollback()  # EXPLAIN ANALYZE ran the UPDATE: leave the table as it was
    plan = "\n".join(r[0] for r in plan_rows)
    return {
        "claim_p50_ms": statistics.median(claims) * 1000,
        "claim_p95_ms": percentile(claims, 0.95) * 1000,
        "next_due_p50_ms": statistics.median(next_dues) * 1000,
        "next_due_p95_ms": percentile(next_dues, 0.95) * 1000,
        "uses_tasks_due_index": "tasks_due" in plan,
        "seq_scan_on_tasks": "Seq Scan on tasks" in plan,
        "plan": plan,
    }


# --- 2 and 3: worker processes -------------------------------------------------------------


def start_worker(sandbox_url: str, store_url: str, poller: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A `kling3 poller` process; its log goes to this process's stderr."""
    env = poller_env(sandbox_url, SANDBOX_KEY, store_url, poller)
    return subprocess.Popen([sys.executable, "-m", "kling3_tools", "poller"], env=env, stdout=subprocess.DEVNULL)


def submit_due_now(sandbox_url: str, store_url: str, count: int, hook: str) -> None:
    asyncio.run(submit(sandbox_url, store_url, count, hook, {}))
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET due_at = extract(epoch FROM now())")  # every task due at once


def throughput(cluster: PostgresCluster, sandbox_url: str, workers: int, deliveries: int) -> float:
    store_url = cluster.migrated_database()
    receiver = Receiver()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        submit_due_now(sandbox_url, store_url, deliveries, receiver.url)
        processes = [start_worker(sandbox_url, store_url, {"rate_limit_per_second": 5000}) for _ in range(workers)]
        deadline = time.time() + 300
        while len(receiver.arrivals) < deliveries and time.time() < deadline:
            time.sleep(0.2)
    finally:
        for process in processes:
            stop(process)
        receiver.server.stop()
    arrivals = sorted(receiver.arrivals.values())
    if len(arrivals) < deliveries:
        raise SystemExit(f"only {len(arrivals)} of {deliveries} delivered with {workers} workers")
    first, last = arrivals[len(arrivals) // 10], arrivals[len(arrivals) * 9 // 10]
    return (len(arrivals) * 0.8) / (last - first)


def owners(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT DISTINCT lease_owner FROM tasks WHERE lease_owner IS NOT NULL").fetchall()
    return {r[0] for r in rows}


def wait_for(check: Any, timeout: float = 60) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if result := check():
            return result
        time.sleep(0.02)
    raise SystemExit("failover benchmark: condition not met in time")


def failover(cluster: PostgresCluster, sandbox_url: str, lease: float) -> dict[str, float]:
    store_url = cluster.migrated_database()
    receiver = Receiver()
    poller = {
        "rate_limit_per_second": 5000,
        "lease_seconds": lease,
        "expected_seconds": [0.0, 1.0],
        "learn_schedule": False,
        "dense_interval_seconds": 0.5,
        "max_interval_seconds": 1.0,
    }
    workers: list[subprocess.Popen[bytes]] = []
    try:
        submit_due_now(sandbox_url, store_url, 64, receiver.url)
        workers.append(start_worker(sandbox_url, store_url, poller))
        [doomed_owner] = wait_for(lambda: owners(store_url))
        workers.append(start_worker(sandbox_url, store_url, poller))
        wait_for(lambda: owners(store_url) - {doomed_owner})
        time.sleep(random.uniform(1, 3))
        with psycopg.connect(store_url, autocommit=True) as conn:
            holding = "SELECT count(*) FROM tasks WHERE lease_owner = %s AND lease_until > extract(epoch FROM now())"
            wait_for(lambda: conn.execute(holding, (doomed_owner,)).fetchone()[0])  # kill it while it holds leases
            workers[0].send_signal(signal.SIGKILL)
            killed_at = time.time()
            workers[0].wait()
            held = dict(
                conn.execute(
                    "SELECT task_id, lease_until FROM tasks WHERE lease_owner = %s AND lease_until > %s",
                    (doomed_owner, killed_at),
                ).fetchall()
            )
            reclaimed: dict[str, float] = {}
            while len(reclaimed) < len(held) and time.time() < killed_at + lease * 4:
                rows = conn.execute(
                    "SELECT task_id FROM tasks WHERE task_id = ANY(%s) AND lease_owner IS DISTINCT FROM %s",
                    (list(set(held) - set(reclaimed)), doomed_owner),
                ).fetchall()
                now = time.time()
                reclaimed.update((r[0], now) for r in rows)
                time.sleep(0.02)
    finally:
        for worker in workers:
            stop(worker)
        receiver.server.stop()
    if not held or len(reclaimed) < len(held):
        raise SystemExit(f"failover: {len(reclaimed)} of {len(held)} held tasks reclaimed")
    after_kill = [reclaimed[t] - killed_at for t in held]
    after_expiry = [reclaimed[t] - held[t] for t in held]
    return {
        "held_at_kill": len(held),
        "lease_seconds": lease,
        "max_seconds_to_reclaim": max(after_kill),
        "max_over_lease": max(after_kill) / lease,
        "max_seconds_after_lease_expired": max(after_expiry),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000, help="tracked tasks for the claim benchmark")
    parser.add_argument("--rounds", type=int, default=1000, help="claims to time")
    parser.add_argument("--deliveries", type=int, default=1200, help="tasks per throughput run")
    parser.add_argument("--lease", type=float, default=5.0, help="lease seconds for the failover run")
    parser.add_argument("--claims-only", action="store_true", help="only the claim query (about a minute)")
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found: apt-get install postgresql")
    cluster = PostgresCluster(bindir).start()
    try:
        url = cluster.migrated_database()
        started = time.time()
        fill(url, args.tasks, due_share=0.1)
        print(f"filled {args.tasks} tasks in {time.time() - started:.1f}s", file=sys.stderr)
        claim = asyncio.run(time_claims(url, args.rounds))
        print(claim.pop("plan"), file=sys.stderr)
        print(json.dumps({"claim": claim}, indent=2))
        # MCP tasks while the MCP server is down: due, earlier than the rest, and of a kind these workers do not serve.
        fill(url, args.tasks, due_share=1.0, origin=McpOrigin(session="down"), prefix="n75mcp")
        unserved = asyncio.run(time_claims(url, args.rounds))
        print(unserved.pop("plan"), file=sys.stderr)
        print(json.dumps({f"claim_with_{args.tasks}_unserved_due": unserved}, indent=2))
        if args.claims_only:
            return
        with sandbox_process(0, status_delay="0.2", starting_balance=str(10**9)) as sandbox_url:
            rates = {n: throughput(cluster, sandbox_url, n, args.deliveries) for n in (1, 2, 4)}
            print(json.dumps({"deliveries_per_second": rates, "4_vs_1": rates[4] / rates[1]}, indent=2))
        with sandbox_process(3600, status_delay="0.2", starting_balance=str(10**9)) as sandbox_url:  # never finish
            print(json.dumps({"failover": failover(cluster, sandbox_url, args.lease)}, indent=2))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
