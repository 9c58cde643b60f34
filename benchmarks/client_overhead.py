"""Status round trips per second: kling3_tools vs bare httpx, against one local sandbox, in one run.

    python -m benchmarks.client_overhead [--requests 2000] [--rounds 5]

The sandbox runs in its own process so that the server's work does not share
this interpreter. Rounds alternate between the two clients and the best round
of each is compared, which keeps a noisy machine's hiccups out of the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from kling3_tools.client import AsyncKlingClient
from kling3_tools.models import GenerateRequest

from .common import SANDBOX_KEY, sandbox_process

KEY = SANDBOX_KEY


async def rate(call: Callable[[], Awaitable[object]], requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await call()
    return requests / (time.perf_counter() - started)


async def main(requests: int, rounds: int) -> None:
    with sandbox_process() as url:
        async with AsyncKlingClient(KEY, base_url=url) as kling, httpx.AsyncClient() as bare:
            task = await kling.generate(GenerateRequest.build(type="pro-text-to-video", prompt="benchmark"))

            async def with_bare_httpx() -> object:
                response = await bare.get(
                    f"{url}/api/status", params={"task_id": task.task_id}, headers={"Authorization": f"Bearer {KEY}"}
                )
                response.raise_for_status()
                return response.json()["data"]

            async def with_kling3_tools() -> object:
                return await kling.status(task.task_id)

            await rate(with_bare_httpx, 100)  # warm both pools
            await rate(with_kling3_tools, 100)
            bare_rates, core_rates = [], []
            for _ in range(rounds):
                bare_rates.append(await rate(with_bare_httpx, requests))
                core_rates.append(await rate(with_kling3_tools, requests))
    best_bare, best_core = max(bare_rates), max(core_rates)
    overhead = best_bare / best_core - 1
    print(f"bare httpx:    {best_bare:8.0f} status round trips/s (best of {rounds} x {requests})")
    print(f"kling3_tools:  {best_core:8.0f} status round trips/s")
    print(f"overhead:      {overhead:+.1%} (target: under +15%)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
