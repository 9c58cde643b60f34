"""The kling3 MCP server against a minimal one-tool MCPServer, over stdio, measured in one run.

    python -m benchmarks.mcp_server [--starts 7] [--calls 200]

Cold start: from spawning the process to `tools/list` answered. Call latency:
`estimate_video_cost` against the minimal server's one tool. Runs alternate
between the two servers and medians are compared. The kling3 server talks to
a local sandbox process (no network); its store is a fresh SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from .common import SANDBOX_KEY, sandbox_process

MINIMAL_SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("minimal")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


server.run()
'''


async def cold_start(params: StdioServerParameters) -> float:
    started = time.perf_counter()
    async with Client(params) as client:
        await client.list_tools()
        return time.perf_counter() - started


async def call_latency(params: StdioServerParameters, call: Callable[[Client], Awaitable[object]], n: int) -> float:
    async with Client(params) as client:
        await client.list_tools()
        for _ in range(10):
            await call(client)
        timings = []
        for _ in range(n):
            started = time.perf_counter()
            await call(client)
            timings.append(time.perf_counter() - started)
    return statistics.median(timings)


async def main(starts: int, calls: int) -> None:
    with sandbox_process() as url, tempfile.TemporaryDirectory() as folder:
        minimal_file = Path(folder) / "minimal_server.py"
        minimal_file.write_text(MINIMAL_SERVER)
        minimal = StdioServerParameters(command=sys.executable, args=[str(minimal_file)])
        env = {
            **os.environ,
            "KLING_BASE_URL": url,
            "KLING_API_KEY": SANDBOX_KEY,
            "KLING_STORE__URL": f"sqlite:///{Path(folder) / 'tasks.db'}",
        }
        kling3 = StdioServerParameters(command=sys.executable, args=["-m", "kling3_tools.mcp"], env=env)

        minimal_starts, kling3_starts = [], []
        for _ in range(starts):
            minimal_starts.append(await cold_start(minimal))
            kling3_starts.append(await cold_start(kling3))

        async def add(client: Client) -> object:
            return await client.call_tool("add", {"a": 1, "b": 2})

        async def estimate(client: Client) -> object:
            return await client.call_tool("estimate_video_cost", {"type": "pro-text-to-video", "duration": 10})

        minimal_call = await call_latency(minimal, add, calls)
        kling3_call = await call_latency(kling3, estimate, calls)

    start_ratio = statistics.median(kling3_starts) / statistics.median(minimal_starts)
    call_ratio = kling3_call / minimal_call
    minimal_start, kling3_start = statistics.median(minimal_starts), statistics.median(kling3_starts)
    print(
        f"cold start   minimal {minimal_start:.2f} s, kling3 {kling3_start:.2f} s"
        f" (median of {starts}): {start_ratio:.2f}x (target: at most 1.5x)"
    )
    print(
        f"call latency minimal {minimal_call * 1000:.2f} ms, kling3 estimate_video_cost {kling3_call * 1000:.2f} ms"
        f" (median of {calls}): {call_ratio:.2f}x (target: at most 1.2x)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.starts, args.calls))
