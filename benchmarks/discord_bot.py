"""`/kling generate` interactions arriving at once (200 by default): time from arrival to the defer call,
p50/p99, for the first burst after login (every connection to Discord opened at once) and for the bursts after it.

    python -m benchmarks.discord_bot [--interactions 200] [--rounds 5]
    python -m benchmarks.discord_bot --side-by-side 10  # first bursts, with and without `gc.freeze`

The bot runs for real (discord.py's own dispatch, the core, the store) against the fake Discord REST API the
tests use, in its own process as Discord is, and a sandbox in its own process. Arrival is when discord.py is
handed INTERACTION_CREATE; the defer is when the fake Discord receives the callback. Discord allows 3 s;
the target is a p99 under 100 ms.

`--side-by-side N` runs N fresh bot processes of each kind, alternating: as `run_bot` starts one (what it
loaded exempted from the garbage collector's walks), and without that step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import discord
import httpx
from kling3_discord import opened

from harness import fake_discord as fd
from harness.helpers import free_port
from kling3_tools.config import Settings
from kling3_tools.launch import exempt_loaded_objects_from_gc

from .common import SANDBOX_KEY, sandbox_process, server_process

TARGET_P99_MS = 100


FAKE_DISCORD = """
import sys
from aiohttp import web
from harness import fake_discord as fd

fake = fd.FakeDiscord()
app = fake.app()


async def callbacks(request: web.Request) -> web.Response:
    return web.json_response({c.path.split("/")[2]: c.at for c in fake.calls if c.path.endswith("/callback")})


app.router.add_get("/bench/callbacks", callbacks)
# Discord takes any burst; aiohttp's default backlog (128) would drop the SYNs past it, for a 1 s retry.
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), backlog=1024, print=None)
"""


def fake_discord_process() -> contextlib.AbstractContextManager[str]:
    """The tests' fake Discord in its own process, as Discord is: its work is not the bot's loop's. Yields its
    URL; `GET /bench/callbacks` answers when each interaction's callback arrived (`time.monotonic`, which is
    one clock for every process on Linux)."""
    port = free_port()
    return server_process([sys.executable, "-c", FAKE_DISCORD, str(port)], port, "/bench/callbacks")


async def measure(
    url: str, discord_url: str, folder: str, interactions: int, rounds: int, *, freeze: bool = True
) -> list[list[float]]:
    """Arrival-to-defer delays, one list per burst."""
    discord.http.Route.BASE = f"{discord_url}/api/v10"
    settings = Settings.load(
        api_key=SANDBOX_KEY,
        base_url=url,
        store={"url": f"sqlite:///{Path(folder) / 'bot.db'}"},
        discord={"cooldown_seconds": 0, "max_concurrent_tasks_per_user": 0},
    )
    bursts: list[list[float]] = []
    async with opened(settings) as bot, bot, httpx.AsyncClient() as http:
        if freeze:
            exempt_loaded_objects_from_gc()  # where `run_bot` does, before login
        await bot.login("benchmark-token")
        bot._connection.parse_guild_create(fd.guild_payload())
        for burst in range(rounds):
            first = 800000000000000000 + burst * interactions
            payloads = [fd.slash("generate", first + i, prompt=f"clip {i}") for i in range(interactions)]
            arrived: dict[str, float] = {}
            for payload in payloads:
                arrived[payload["id"]] = time.monotonic()
                bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
            await asyncio.sleep(2)  # a burst is deferred within milliseconds; its submissions settle meanwhile
            deferred = (await http.get(f"{discord_url}/bench/callbacks")).json()
            assert set(arrived) <= set(deferred), "some interactions were never acknowledged"
            bursts.append([deferred[interaction_id] - at for interaction_id, at in arrived.items()])
    return bursts


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def side_by_side(processes: int, interactions: int) -> None:
    """First-burst p99s of `processes` fresh bots of each kind, alternating."""
    p99s: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(processes):
        for freeze in (True, False):
            command = [sys.executable, "-m", "benchmarks.discord_bot", "--interactions", str(interactions)]
            done = subprocess.run([*command, "--rounds", "1", "--json", *([] if freeze else ["--no-freeze"])],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            p99s[freeze].append(percentile(sorted(json.loads(done.stdout)[0]), 0.99))
    for freeze, values in p99s.items():
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"first burst p99, {'as run_bot (frozen)' if freeze else 'without gc.freeze  '}: "
              f"median {statistics.median(values):.1f} ms ({shown})")  # fmt: skip
    print(f"ratio of medians: {statistics.median(p99s[True]) / statistics.median(p99s[False]):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--side-by-side", type=int, metavar="N", help="N fresh bots of each kind, alternating")
    parser.add_argument("--no-freeze", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the bursts' delays
    args = parser.parse_args()
    if args.side_by_side:
        side_by_side(args.side_by_side, args.interactions)
        return
    with sandbox_process(60) as url, fake_discord_process() as discord_url, tempfile.TemporaryDirectory() as folder:
        bursts = asyncio.run(
            measure(url, discord_url, folder, args.interactions, args.rounds, freeze=not args.no_freeze)
        )
    if args.json:
        print(json.dumps(bursts))
        return
    for name, delays in [("first burst", bursts[0]), ("later bursts", [d for b in bursts[1:] for d in b])]:
        if not delays:
            continue
        ordered = sorted(delays)
        p50, p99 = statistics.median(ordered) * 1000, percentile(ordered, 0.99)
        print(
            f"{name:12} {len(ordered):5} interactions: arrival to defer p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms "
            f"(target p99 < {TARGET_P99_MS} ms: {'ok' if p99 < TARGET_P99_MS else 'ABOVE'}; Discord allows 3 s)"
        )


if __name__ == "__main__":
    main()
