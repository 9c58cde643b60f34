"""Callbacks against polling on the kling provider: status checks per delivered video, and the lag from the
provider finishing a video to its webhook arriving.

    python -m benchmarks.callbacks [--tasks 40] [--scale 0.05]

Tasks finish uniformly between 2 and 10 minutes (what integrators report), compressed by --scale (0.05: 2-10
minutes last 6-30 s), and the poller's default schedule is compressed alike. Both runs use the same sandbox
(in its own process, speaking Kling's format, calling back when a task ends), a poller and callback receiver in
this process, and a webhook receiver; they run one after the other in one invocation. Polling's lag is given
unscaled (what it is at real durations); a callback's does not depend on the schedule and is given as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx

from harness.helpers import SECRET, eventually, free_port
from kling3_tools import GenerateRequest, KlingService, Settings, ops
from kling3_tools.domain.records import WebhookOrigin
from kling3_tools.workflows.schedule import SchedulePolicy

from .common import sandbox_process
from .poller import Receiver

MIN_MINUTES, MAX_MINUTES = 2, 10


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(url: str, tasks: int, scale: float, callbacks: bool) -> dict[str, Any]:
    receiver = Receiver()  # notes when each task's webhook arrives
    address = f"127.0.0.1:{free_port()}"
    async with httpx.AsyncClient(base_url=url) as sandbox:
        before = (await sandbox.get("/sandbox/stats")).json()["requests"].get("status", 0)
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings.load(
                provider="kling",
                base_url=url,
                access_key="sandbox-access",
                secret_key="sandbox-secret-for-kling-format-tokens",
                store={"url": f"sqlite:///{Path(folder) / 'tasks.db'}"},
                poller={"webhook_secret": SECRET, "rate_limit_per_second": 50},
                callbacks={"listen": address, "public_url": f"http://{address}"} if callbacks else {},
            )
            schedule = SchedulePolicy.from_settings(settings.poller).scaled(scale)
            async with (
                KlingService.open(settings, schedule=schedule) as service,
                ops.exposed(service),
                service.polling(),
            ):
                for n in range(tasks):
                    request = GenerateRequest.build(type="std-text-to-video", prompt=f"clip {n}")
                    await service.submit(request, WebhookOrigin(url=receiver.url))
                await eventually(lambda: len(receiver.arrivals) == tasks, timeout=MAX_MINUTES * 60 * scale * 3)
        receiver.server.stop()
        finished = (await sandbox.get("/sandbox/tasks")).json()
        status = (await sandbox.get("/sandbox/stats")).json()["requests"].get("status", 0) - before
    lags = [arrived - finished[task_id]["finishes_at"] for task_id, arrived in receiver.arrivals.items()]
    unscale = 1.0 if callbacks else 1 / scale
    return {
        "delivered": len(receiver.arrivals),
        "checks_per_video": status / max(1, len(receiver.arrivals)),
        "lag_p50": statistics.median(lags) * unscale,
        "lag_p95": percentile(lags, 0.95) * unscale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--scale", type=float, default=0.05)
    args = parser.parse_args()
    low, high = MIN_MINUTES * 60 * args.scale, MAX_MINUTES * 60 * args.scale
    middle, spread = (low + high) / 2, (high - low) / (high + low)
    with sandbox_process(middle, finish_spread=f"{spread:g}") as url:
        polling = asyncio.run(run(url, args.tasks, args.scale, callbacks=False))
        called = asyncio.run(run(url, args.tasks, args.scale, callbacks=True))
    for name, result in (("polling", polling), ("callbacks", called)):
        print(
            f"{name:>9}: {result['delivered']} delivered, {result['checks_per_video']:.1f} status checks per video, "
            f"lag p50 {result['lag_p50']:.1f} s, p95 {result['lag_p95']:.1f} s"
        )
    print(f"checks: {called['checks_per_video'] / polling['checks_per_video']:.2f}x of polling")


if __name__ == "__main__":
    main()
