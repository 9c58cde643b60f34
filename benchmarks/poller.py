"""The poller's schedule against a naive fixed 5-second poll, and its memory with 10,000 pending tasks.

    python -m benchmarks.poller [--tasks 2000] [--naive-tasks 400] [--scale 0.5] [--pending 10000]

Tasks finish uniformly between 2 and 10 minutes (what integrators report),
compressed by --scale (0.5: one real minute lasts 30 s). Everything is real
and local: the sandbox and the poller are subprocesses (`kling3 sandbox`,
`kling3 poller`), results arrive as signed webhooks at a receiver in this
process. Delays are reported in real (unscaled) seconds.

The naive baseline is the same poller with a flat schedule: one check every
5 s (scaled) from submission. It runs on fewer tasks (--naive-tasks) because
its request rate at 2,000 tasks is more than this 2-core machine serves;
requests per task do not depend on how many tasks share the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from harness.helpers import SECRET, poller_env
from kling3_tools.adapters.sandbox.server import ThreadedServer
from kling3_tools.config import Settings
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import WebhookOrigin
from kling3_tools.service import KlingService
from kling3_tools.workflows.notifiers import SIGNATURE_HEADER, verify_signature

from .common import SANDBOX_KEY, sandbox_process


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.duplicates = 0
        self.server = ThreadedServer(Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])).start()
        self.url = f"{self.server.url}/hook"

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        if not verify_signature(SECRET, body, request.headers.get(SIGNATURE_HEADER)):
            return Response(status_code=401)
        task_id = json.loads(body)["task"]["task_id"]
        if task_id in self.arrivals:
            self.duplicates += 1
        self.arrivals.setdefault(task_id, time.time())
        return Response(status_code=204)


def start_poller(url: str, db: Path, poller: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = poller_env(url, SANDBOX_KEY, f"sqlite:///{db}", poller)
    return subprocess.Popen([sys.executable, "-m", "kling3_tools", "poller"], env=env, stderr=subprocess.DEVNULL)


async def submit(url: str, store_url: str, count: int, hook: str, poller: dict[str, Any]) -> None:
    """Submit like a front end that shares the poller's configuration."""
    settings = Settings.load(
        api_key=SANDBOX_KEY, base_url=url, store={"url": store_url}, poller={"webhook_secret": SECRET, **poller}
    )
    async with KlingService.open(settings) as service:
        semaphore = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with semaphore:
                request = GenerateRequest.build(type="std-text-to-video", prompt=f"clip {i}", duration=5)
                await service.submit(request, WebhookOrigin(url=hook))

        await asyncio.gather(*(one(i) for i in range(count)))


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_schedule(name: str, tasks: int, scale: float, poller: dict[str, Any]) -> dict[str, Any]:
    receiver = Receiver()
    sandbox = sandbox_process(360 * scale, finish_spread=str(4 / 6), starting_balance=str(10**9))
    try:
        with sandbox as url, tempfile.TemporaryDirectory() as folder:
            db = Path(folder) / "tasks.db"
            poller = {"rate_limit_per_second": 2000, **poller}
            asyncio.run(submit(url, f"sqlite:///{db}", tasks, receiver.url, poller))
            status_before = httpx.get(f"{url}/sandbox/stats").json()["requests"].get("status", 0)
            process = start_poller(url, db, poller)
            deadline = time.time() + 900 * scale + 120
            while len(receiver.arrivals) < tasks and time.time() < deadline:
                time.sleep(0.5)
            stop(process)
            counters = httpx.get(f"{url}/sandbox/stats").json()
            finishes = httpx.get(f"{url}/sandbox/tasks").json()
    finally:
        receiver.server.stop()
    delays = [(receiver.arrivals[t] - f["finishes_at"]) / scale for t, f in finishes.items() if t in receiver.arrivals]
    return {
        "name": name,
        "tasks": tasks,
        "delivered": len(receiver.arrivals),
        "duplicates": receiver.duplicates,
        "requests_per_task": (counters["requests"]["status"] - status_before) / tasks,
        "delay_p50": statistics.median(delays),
        "delay_p95": percentile(delays, 0.95),
    }


def run_pending(pending: int, seconds: float) -> dict[str, Any]:
    """10,000 tasks that will not finish; the poller at its default 5 requests/s, for `seconds`."""
    with sandbox_process(10**6, starting_balance=str(10**9)) as url, tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "tasks.db"
        poller = {"expected_seconds": [0.01, 10**6], "dense_interval_seconds": 60}  # all due at once
        asyncio.run(submit(url, f"sqlite:///{db}", pending, "http://127.0.0.1:9/unused", poller))
        httpx.post(f"{url}/sandbox/options", json={"rate_limit_per_second": 10, "rate_limit_burst": 10})
        before = httpx.get(f"{url}/sandbox/stats").json()
        process = start_poller(url, db, poller)
        time.sleep(seconds)
        stop(process)
        after = httpx.get(f"{url}/sandbox/stats").json()
    status = after["requests"].get("status", 0) - before["requests"].get("status", 0)
    limited = after["rejections"].get("RATE_LIMITED", 0) - before["rejections"].get("RATE_LIMITED", 0)
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "status_per_second": status / seconds,
        "rate_limited": limited,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--naive-tasks", type=int, default=400)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--pending-seconds", type=float, default=20)
    args = parser.parse_args()
    s = args.scale
    ours = run_schedule(
        "our schedule",
        args.tasks,
        s,
        {"expected_seconds": [120 * s, 600 * s], "dense_interval_seconds": 8 * s, "max_interval_seconds": 60 * s},
    )
    naive = run_schedule(
        "naive 5 s poll",
        args.naive_tasks,
        s,
        {"expected_seconds": [0, 10**9], "dense_interval_seconds": 5 * s, "learn_schedule": False},
    )
    for run in (ours, naive):
        print(
            f"{run['name']:15} {run['delivered']}/{run['tasks']} delivered ({run['duplicates']} duplicates), "
            f"{run['requests_per_task']:.1f} status requests/task, "
            f"delay p50 {run['delay_p50']:.1f} s, p95 {run['delay_p95']:.1f} s (real seconds)"
        )
    ratio = ours["requests_per_task"] / naive["requests_per_task"]
    print(f"requests per task, ours / naive: {ratio:.2f} (target: at most 0.5; p95 delay target: 10 s)")
    pending = run_pending(args.pending, args.pending_seconds)
    print(
        f"{args.pending} pending tasks: peak poller RSS {pending['peak_rss_mb']:.0f} MB (target: under 150 MB), "
        f"{pending['status_per_second']:.1f} status requests/s at the default limit of 5/s, "
        f"{pending['rate_limited']} answered 429"
    )


if __name__ == "__main__":
    main()
