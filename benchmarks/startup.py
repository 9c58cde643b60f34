"""Start-up, first answer, exit and memory of every entry point against the floor of its own libraries,
measured side by side in one interleaved run.

    python -m benchmarks.startup [--runs 21] [--calls 50]

- MCP (`kling3-mcp` on a sandbox in its own process, over stdio, spoken to byte for byte so that the
  process is ours to time and measure) against a minimal one-tool `MCPServer` on the same SDK:
  a session that only lists the tools: cold start (spawn → initialize → tools/list answered), exit (stdin
  closed → the process gone) and peak RSS (VmHWM) after tools/list; a session that uses a tool: its first
  call (ours opens its core then: the service, the store, the poller), one cheap call (`estimate_video_cost`
  against the minimal server's `add`, median of `--calls` after warm-up), exit and peak RSS at its end.
- CLI against the floor of the libraries each truly uses, doing the least of the same work: `kling3 --help`
  against argparse printing help for a one-field pydantic model; `kling3 cost …` and `kling3 models`
  against that model and a rich console printing one line; `kling3 status ID` against a bare httpx GET
  of the same status with the same key, and (for information) against the libraries it truly needs
  (asyncio, httpx's async client, a pydantic model, the SQLite store) doing the least of its work.

Runs alternate between each measure and its floor; medians are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from harness.helpers import RawStdio

from .common import SANDBOX_KEY, sandbox_process
from .mcp_server import MINIMAL_SERVER


async def mcp_session(command: list[str], env: dict[str, str]) -> RawStdio:
    """A server past its handshake, tools listed."""
    server = await RawStdio.spawn(command, env, stderr=subprocess.DEVNULL)
    await server.handshake()
    await answered(server, "tools/list")
    return server


async def answered(server: RawStdio, method: str, params: dict[str, object] | None = None) -> dict[str, object]:
    answer = await server.ask(method, params)
    if "error" in answer:
        raise SystemExit(f"{method}: {answer['error']}")
    return dict(answer["result"])


def peak_rss_mb(server: RawStdio) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def closed(server: RawStdio) -> float:
    """Close stdin as a client that is done would; seconds until the process is gone."""
    assert server.process.stdin is not None
    started = time.perf_counter()
    server.process.stdin.close()
    await server.process.wait()
    return time.perf_counter() - started


async def mcp_round(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(cold start, exit, peak RSS in MB) of one server start."""
    started = time.perf_counter()
    server = await mcp_session(command, env)
    cold = time.perf_counter() - started
    rss = peak_rss_mb(server)
    return cold, await closed(server), rss


async def session_round(
    command: list[str], env: dict[str, str], tool: str, arguments: dict[str, object], n: int
) -> tuple[float, float, float, float]:
    """A session that uses a tool: (its first call, which opens our core; the median of `n` calls after 10 of
    warm-up; exit once stdin closes, the core open; peak RSS in MB)."""
    server = await mcp_session(command, env)

    async def call() -> float:
        started = time.perf_counter()
        await answered(server, "tools/call", {"name": tool, "arguments": arguments})
        return time.perf_counter() - started

    first = await call()
    for _ in range(10):
        await call()
    median = statistics.median([await call() for _ in range(n)])
    rss = peak_rss_mb(server)
    return first, median, await closed(server), rss


def seconds_of(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode()[-500:]}")
    return took


def ratio_line(name: str, ours: list[float], floor: list[float], target: float | None, unit: str = "ms") -> str:
    mine, base = statistics.median(ours), statistics.median(floor)
    scale = 1000 if unit == "ms" else 1
    verdict = "" if target is None else f"(target {target:g}x) " + ("ok" if mine / base <= target else "ABOVE")
    return f"{name:38} {mine * scale:8.2f} {unit} vs {base * scale:8.2f} {unit}: {mine / base:5.2f}x {verdict}"


async def main(runs: int, calls: int) -> None:
    python = sys.executable
    with sandbox_process() as url, tempfile.TemporaryDirectory() as folder:
        minimal_file = Path(folder) / "minimal_server.py"
        minimal_file.write_text(MINIMAL_SERVER)
        store = Path(folder) / "tasks.db"
        env = {
            **os.environ,
            "KLING_BASE_URL": url,
            "KLING_API_KEY": SANDBOX_KEY,
            "KLING_STORE__URL": f"sqlite:///{store}",
        }
        minimal, kling3 = [python, str(minimal_file)], [python, "-m", "kling3_tools.mcp"]
        async with httpx.AsyncClient() as http:
            made = await http.post(
                f"{url}/api/generate",
                json={"type": "std-text-to-video", "prompt": "x"},
                headers={"Authorization": f"Bearer {SANDBOX_KEY}"},
            )
        task_id = made.json()["data"]["task_id"]
        bare_get = (
            "import httpx, sys; r = httpx.get(sys.argv[1], params={'task_id': sys.argv[2]}, "
            "headers={'Authorization': 'Bearer ' + sys.argv[3]}); r.raise_for_status(); print(r.json()['data'])"
        )
        # What `status` truly needs (asyncio, httpx's async client, a pydantic model, the SQLite store) doing the
        # least of its work: below the bare GET by the cost of pydantic and asyncio alone.
        needed_get = (
            "import asyncio, sqlite3, sys\nimport httpx\nfrom pydantic import BaseModel\n"
            "class Task(BaseModel):\n    task_id: str\n    status: str\n"
            "async def main():\n    async with httpx.AsyncClient() as http:\n"
            "        r = await http.get(sys.argv[1], params={'task_id': sys.argv[2]}, "
            "headers={'Authorization': 'Bearer ' + sys.argv[3]})\n"
            "    task = Task.model_validate(r.json()['data'])\n"
            "    sqlite3.connect(sys.argv[4]).execute('SELECT 1 FROM tasks WHERE task_id = ?', (task.task_id,))\n"
            "    print(task)\nasyncio.run(main())"
        )
        model = "from pydantic import BaseModel\nclass Request(BaseModel):\n    prompt: str = ''\n"
        help_floor = [python, "-c", f"import argparse\n{model}argparse.ArgumentParser().print_help()"]
        print_floor = [python, "-c", f"{model}from rich.console import Console\nConsole().print('400 credits')"]
        cli: dict[str, tuple[list[str], list[str]]] = {
            "kling3 --help": ([python, "-m", "kling3_tools", "--help"], help_floor),
            "kling3 cost -t std-text-to-video -d 5": (
                [python, "-m", "kling3_tools", "cost", "-t", "std-text-to-video", "-d", "5"],
                print_floor,
            ),
            "kling3 models": ([python, "-m", "kling3_tools", "models"], print_floor),
            "kling3 status ID": (
                [python, "-m", "kling3_tools", "status", task_id],
                [python, "-c", bare_get, f"{url}/api/status", task_id, SANDBOX_KEY],
            ),
            "kling3 status ID, vs what it needs": (
                [python, "-m", "kling3_tools", "status", task_id],
                [python, "-c", needed_get, f"{url}/api/status", task_id, SANDBOX_KEY, store],
            ),
        }
        mcp_measures = ["cold start", "exit", "rss", "first call", "one tool call", "exit, core open", "rss, core open"]
        measures: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in [*mcp_measures, *cli]}

        def add(name: str, ours: float, floor: float) -> None:
            measures[name][0].append(ours)
            measures[name][1].append(floor)

        estimate = {"type": "pro-text-to-video", "duration": 10}
        for _ in range(runs):
            floor_rounds = (
                await mcp_round(minimal, env),
                await session_round(minimal, env, "add", {"a": 1, "b": 2}, calls),
            )
            our_rounds = (
                await mcp_round(kling3, env),
                await session_round(kling3, env, "estimate_video_cost", estimate, calls),
            )
            for name, ours, floor in zip(
                mcp_measures, [*our_rounds[0], *our_rounds[1]], [*floor_rounds[0], *floor_rounds[1]], strict=True
            ):
                add(name, ours, floor)
            for name, (ours_command, floor_command) in cli.items():
                floor_seconds = seconds_of(floor_command, env)
                add(name, seconds_of(ours_command, env), floor_seconds)

    targets: dict[str, tuple[float | None, str]] = {
        "cold start": (1.05, "ms"),
        "exit": (1.2, "ms"),
        "rss": (1.1, "MB"),
        "first call": (None, "ms"),
        "one tool call": (1.05, "ms"),
        "exit, core open": (1.2, "ms"),
        "rss, core open": (None, "MB"),
        **{name: (1.2, "ms") for name in cli},
        "kling3 status ID, vs what it needs": (None, "ms"),
    }
    print(f"{runs} interleaved runs on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    for name, (our_values, floor_values) in measures.items():
        target, unit = targets[name]
        label = f"MCP {name}" if name in mcp_measures else name
        print(ratio_line(label, our_values, floor_values, target, unit))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--calls", type=int, default=50)
    options = parser.parse_args()
    asyncio.run(main(options.runs, options.calls))
