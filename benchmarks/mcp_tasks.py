"""Following a video as an MCP task against following it as before, over stdio, measured in one run.

    python -m benchmarks.mcp_tasks [--videos 60] [--rounds 200]

The server (a 2025-11-25 session, raw JSON-RPC) starts `--videos` videos as tasks on a local sandbox process, half
of them finished. Then, interleaved: `tasks/get` of a task handle against reading its video's resource
(`kling://tasks/{id}`, how a host followed a video before tasks: both read the store), and `tasks/list` (a page of
50 handles, each with its video read). Medians are compared."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.helpers import RawStdio

from .common import SANDBOX_KEY, sandbox_process

VIDEO = {"type": "std-text-to-video", "prompt": "a lighthouse", "duration": 5}


async def timed(server: RawStdio, method: str, params: dict[str, Any]) -> float:
    started = time.perf_counter()
    answer = await server.ask(method, params)
    elapsed = time.perf_counter() - started
    assert "result" in answer, answer
    return elapsed


async def main(videos: int, rounds: int) -> None:
    with sandbox_process(finish_seconds=2) as url, tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "KLING_BASE_URL": url,
            "KLING_API_KEY": SANDBOX_KEY,
            "KLING_STORE__URL": f"sqlite:///{Path(folder) / 'tasks.db'}",
        }
        server = await RawStdio.spawn([sys.executable, "-m", "kling3_tools.mcp"], env)
        await server.handshake()
        handles: list[tuple[str, str]] = []  # (task handle, video task id)
        for number in range(videos):
            if number == videos // 2:
                await asyncio.sleep(4)  # the first half finish meanwhile
            call = {"name": "generate_video", "arguments": VIDEO, "task": {}}
            task = (await server.ask("tools/call", call))["result"]["task"]
            handles.append((task["taskId"], task["statusMessage"].rsplit(" ", 1)[-1]))
        gets, reads, lists = [], [], []
        for _ in range(rounds):
            handle, video = random.choice(handles)
            gets.append(await timed(server, "tasks/get", {"taskId": handle}))
            reads.append(await timed(server, "resources/read", {"uri": f"kling://tasks/{video}"}))
            lists.append(await timed(server, "tasks/list", {}))
        server.process.stdin.close()  # type: ignore[union-attr]
        await server.process.wait()
    get, read, page = (statistics.median(t) * 1000 for t in (gets, reads, lists))
    print(f"tasks/get {get:.2f} ms vs the video's resource {read:.2f} ms: {get / read:.2f}x")
    print(f"tasks/list, a page of 50: {page:.2f} ms ({page / 50:.3f} ms a task)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.videos, arguments.rounds))
