"""Status round trips per second: kling3_tools vs bare httpx, against one local sandbox, in one run.

    python -m benchmarks.client_overhead [--requests 2000] [--rounds 5]

The sandbox runs in its own process so that the server's work does not share
this interpreter. Rounds alternate between the clients and the best round
of each is compared, which keeps a noisy machine's hiccups out of the ratio.

Our pool keeps no cookies (`pool.CookielessClient`), which spares httpx's
per-answer cookie bookkeeping; the same bare GET on that pool is timed too, so
the cost of our own layers (deadline, size cap, validation, retries) shows apart.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from kling3_tools.adapters.client import AsyncKlingClient
from kling3_tools.adapters.pool import http_pool
from kling3_tools.domain.models import GenerateRequest

from .common import SANDBOX_KEY, sandbox_process

KEY = SANDBOX_KEY


async def rate(call: Callable[[], Awaitable[object]], requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await call()
    return requests / (time.perf_counter() - started)


async def main(requests: int, rounds: int) -> None:
    with sandbox_process() as url:
        async with AsyncKlingClient(KEY, base_url=url) as kling, httpx.AsyncClient() as bare, http_pool() as pool:
            task = await kling.generate(GenerateRequest.build(type="pro-text-to-video", prompt="benchmark"))

            def bare_get(http: httpx.AsyncClient) -> Callable[[], Awaitable[object]]:
                async def get() -> object:
                    response = await http.get(
                        f"{url}/api/status",
                        params={"task_id": task.task_id},
                        headers={"Authorization": f"Bearer {KEY}"},
                    )
                    response.raise_for_status()
                    return response.json()["data"]

                return get

            async def with_kling3_tools() -> object:
                return await kling.status(task.task_id)

            contenders = {
                "bare httpx": bare_get(bare),
                "kling3_tools": with_kling3_tools,
                "bare, our pool": bare_get(pool),
            }
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            for call in contenders.values():
                await rate(call, 100)  # warm every pool
            for _ in range(rounds):
                for name, call in contenders.items():
                    rates[name].append(await rate(call, requests))
    best = {name: max(values) for name, values in rates.items()}
    print(f"bare httpx:      {best['bare httpx']:8.0f} status round trips/s (best of {rounds} x {requests})")
    print(f"kling3_tools:    {best['kling3_tools']:8.0f} status round trips/s")
    print(f"overhead:        {best['bare httpx'] / best['kling3_tools'] - 1:+.1%} (target: at most +3%)")
    print(
        f"our layers only: {best['bare, our pool'] / best['kling3_tools'] - 1:+.1%} (vs the same bare GET on our pool)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
