"""Start-up kept honest without timing it: what `kling3 --help` and the MCP server import before their first
answer is checked against an allow-list, so a module that starts loading early is a test that fails (the
timings themselves are in `benchmarks/startup.py`)."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.helpers import eventually, kling3, start_kling3
from kling3_tools.config import Settings
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.mcp.serve import loaded_server
from kling3_tools.service import KlingService

from .support import bot_process_env, connect_stdio, fake_discord, http_server, server_env, start_bot_process

PYTHON_PACKAGES = {"pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection"}

HELP_MODULES = {  # `kling3 --help`: the parser, built from the request model and the catalog; nothing else
    "kling3_tools",
    "kling3_tools.domain",
    "kling3_tools.domain.catalog",
    "kling3_tools.cli",
    "kling3_tools.cli.parser",
    "kling3_tools.domain.errors",
    "kling3_tools.domain.rules",  # the request model's rules between fields
    "kling3_tools.domain.url_fields",
    "kling3_tools.launch",
    "kling3_tools.mcp",  # its argument definitions only (the server module loads in `kling3 mcp`)
    "kling3_tools.domain.models",
    "kling3_tools.version",
}

# What the MCP server loads before it has listed its tools, beyond a minimal one-tool server on the same SDK:
# these light modules of ours, and no other package. The settings (pydantic-settings, our sections) and the
# core (the service, the store, the HTTP client, the tools) load at the first request that needs them.
MCP_MODULES = {
    "kling3_tools", "kling3_tools.domain", "kling3_tools.domain.errors", "kling3_tools.launch", "kling3_tools.version",
    "kling3_tools.mcp", "kling3_tools.mcp.arguments", "kling3_tools.mcp.http", "kling3_tools.mcp.manifest",
    "kling3_tools.mcp.serve", "kling3_tools.mcp.server", "kling3_tools.mcp.tasks",
}  # fmt: skip
NEVER_AT_START = {
    "psycopg", "psycopg_pool", "obstore", "av", "numpy", "PIL", "discord", "boto3", "moto", "prometheus_client",
}  # fmt: skip


def imported(script: str, env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def packages(modules: set[str]) -> set[str]:
    tops = {name.split(".")[0] for name in modules}
    return {top for top in tops if top not in sys.stdlib_module_names and not top.startswith("_")}


@pytest.mark.process
def test_kling3_help_loads_only_the_parser_and_the_request_model():
    modules = imported(
        "import json, sys\nfrom kling3_tools.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
        "    pass\nprint(json.dumps(sorted(sys.modules)))"
    )
    assert packages(modules) - {"kling3_tools"} <= PYTHON_PACKAGES, packages(modules)
    assert {name for name in modules if name.startswith("kling3_tools")} == HELP_MODULES


LISTED = """
import asyncio, json, sys
from mcp import Client
{server}
async def main():
    async with {held}Client(server) as client:
        await client.list_tools()
        print(json.dumps(sorted(sys.modules)))
asyncio.run(main())
"""


@pytest.mark.process
def test_the_mcp_server_lists_its_tools_before_loading_its_core(sandbox, tmp_path: Path):
    floor = imported(
        LISTED.format(
            server="from mcp.server.mcpserver import MCPServer\nserver = MCPServer('minimal')\n"
            "server.add_tool(lambda a, b: a + b, name='add')",
            held="",
        )
    )
    ours = imported(
        LISTED.format(
            server="import argparse, functools\nimport kling3_tools.mcp\n"
            "from kling3_tools.launch import read_settings\nfrom kling3_tools.mcp.serve import shell\n"
            "read = functools.partial(read_settings, argparse.Namespace(config=None))\n"
            "server = shell(read, sandbox=False, warm_up_seconds=None)",
            held="server.core_held(), ",
        ),
        env=server_env(sandbox, tmp_path),
    )
    assert packages(ours) - packages(floor) == {"kling3_tools"}
    assert {name for name in ours if name.startswith("kling3_tools")} == MCP_MODULES
    assert not packages(ours) & (NEVER_AT_START | {"httpx"})  # the core's HTTP client


@pytest.mark.process
def test_a_command_that_calls_the_api_loads_httpx_without_its_command_line(sandbox, tmp_path: Path):
    """httpx loads click, pygments and rich's progress bars for its own CLI unless told it cannot."""
    env = {
        "KLING_BASE_URL": sandbox.url,
        "KLING_API_KEY": sandbox.api_key,
        "KLING_STORE__URL": f"sqlite:///{tmp_path}/t.db",
    }
    made = kling3("generate", "a fox", "-t", "std-text-to-video", **env, PYTHONPROFILEIMPORTTIME="1")
    assert made.returncode == 0, made.stderr
    imports = {line.rsplit("|", 1)[-1].strip() for line in made.stderr.splitlines() if line.startswith("import time:")}
    assert "httpx._client" in imports  # the walk sees real imports
    assert not imports & {"click", "pygments", "rich.syntax", "rich.progress"}


FIRST_REQUEST = """
import asyncio, json, sys
from kling3_tools.config import Settings
from kling3_tools.service import KlingService
async def main():
    settings = Settings.load(store={{"url": "sqlite:///{store}"}})
    async with KlingService.open(settings) as service:
        if {polling}:
            async with service.polling():
                before = set(sys.modules)
                await service.status("{task_id}")
                print(json.dumps(sorted(set(sys.modules) - before)))
        else:
            print(json.dumps(sorted(sys.modules)))
asyncio.run(main())
"""


@pytest.mark.process
async def test_a_long_lived_process_loads_what_its_first_request_needs_when_it_starts(sandbox, client, tmp_path):
    """A long-lived process (the bot, the MCP core, `kling3 poller`) runs a poller from its start; its first
    answers (a burst of Discord commands right after login) then wait on no import (anyio's backend was ~14 ms).
    A one-shot command that makes no request does not load it."""
    task = await client.generate(GenerateRequest.build(type="std-text-to-video", prompt="x"))
    env = {**os.environ, "KLING_BASE_URL": sandbox.url, "KLING_API_KEY": sandbox.api_key}
    script = FIRST_REQUEST.format(store=tmp_path / "t.db", task_id=task.task_id, polling=True)
    assert await asyncio.to_thread(imported, script, env) == set()
    opened_only = FIRST_REQUEST.format(store=tmp_path / "t.db", task_id=task.task_id, polling=False)
    assert "anyio._backends._asyncio" not in await asyncio.to_thread(imported, opened_only, env)


# Loaded into a front end's process by `sitecustomize` (nothing in the front end is changed): it writes how many
# objects the process has exempted from the cyclic collector (`gc.get_freeze_count()`) whenever that changes.
FROZEN_WATCH = """
import gc, os, threading, time

def watch(path, written=None):
    while True:
        count = gc.get_freeze_count()
        if count != written:
            with open(path + ".new", "w") as file:
                file.write(str(count))
            os.replace(path + ".new", path)
            written = count
        time.sleep(0.02)

threading.Thread(target=watch, args=(os.environ["FROZEN_COUNT_FILE"],), daemon=True).start()
"""
CORE_LOADED = 20_000  # objects alive once a front end's core is loaded: 50,000 to 100,000


def frozen_watch(folder: Path) -> tuple[dict[str, str], Callable[[], int]]:
    """The environment that loads `FROZEN_WATCH` into a Python process (one process per folder), and what it
    last wrote."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(FROZEN_WATCH)
    count = folder / "frozen"
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "FROZEN_COUNT_FILE": str(count)}
    return env, lambda: int(count.read_text()) if count.exists() else 0


@pytest.mark.process
@pytest.mark.parametrize("front_end", ["mcp over stdio", "mcp over http", "kling3 poller", "discord bot"])
async def test_each_long_lived_front_end_exempts_what_it_loaded_from_the_collector(
    monkeypatch, sandbox, tmp_path, front_end
):
    """Once its core is loaded, each freezes what is alive (modules, classes, the service): a full collection
    walked all of it, ~50 ms that fell in the bot's first burst of commands after login and held every defer
    back."""
    watch, frozen = frozen_watch(tmp_path / "watch")
    loaded = functools.partial(eventually, lambda: frozen() > CORE_LOADED, timeout=30)
    if front_end == "mcp over stdio":
        async with connect_stdio(sandbox, tmp_path, env=server_env(sandbox, tmp_path, **watch)) as client:
            assert not (await client.call_tool("estimate_video_cost", {"type": "std-text-to-video"})).is_error
            await loaded()
    elif front_end == "mcp over http":
        with http_server(server_env(sandbox, tmp_path, **watch)):
            await loaded()
    elif front_end == "kling3 poller":
        env = {**os.environ, **watch, "KLING_STORE__URL": f"sqlite:///{tmp_path / 'poller.db'}"}
        poller = start_kling3(["--sandbox", "poller"], env, tmp_path / "poller.log")
        try:
            await loaded()
        finally:
            poller.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(poller.wait, 20) == 0, (tmp_path / "poller.log").read_text()
    else:
        async with fake_discord(monkeypatch) as fake:
            bot = start_bot_process({**bot_process_env(fake, sandbox, tmp_path), **watch}, tmp_path / "bot.log")
            try:
                await loaded()
            finally:
                bot.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(bot.wait, 20) == 0, (tmp_path / "bot.log").read_text()


async def test_an_embedder_s_heap_is_never_frozen(sandbox, tmp_path):
    """The service, its poller and a loaded MCP server, in a program of someone else's: nothing frozen."""
    before = gc.get_freeze_count()
    settings = Settings.load(
        api_key=sandbox.api_key, base_url=sandbox.url, store={"url": f"sqlite:///{tmp_path / 'own.db'}"}
    )
    async with KlingService.open(settings) as service, service.polling(), loaded_server(settings, sandbox=True):
        await asyncio.sleep(0.1)
        assert gc.get_freeze_count() == before


@pytest.mark.process
async def test_an_mcp_core_whose_store_cannot_open_freezes_nothing_until_it_opens(sandbox, tmp_path):
    """A store that fails the core's opening (here a file that is not SQLite) leaves the heap as it was, each
    time: what a failed opening left behind is garbage to collect, not to keep. The first opening that works
    freezes."""
    watch, frozen = frozen_watch(tmp_path / "watch")
    store = tmp_path / "mcp.db"
    store.write_bytes(b"garbage" * 100)
    async with connect_stdio(sandbox, tmp_path, env=server_env(sandbox, tmp_path, **watch)) as client:
        for _ in range(3):
            with pytest.raises(Exception, match=r"kling3 could not start: .*not a usable SQLite file"):
                await client.call_tool("list_videos", {})
        await asyncio.sleep(0.5)  # the watcher writes within 20 ms of a change
        assert frozen() == 0
        store.unlink()
        assert not (await client.call_tool("list_videos", {})).is_error
        await eventually(lambda: frozen() > CORE_LOADED, timeout=30)
