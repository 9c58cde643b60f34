"""Helpers the test modules share: MCP, poller, worker, store and Discord set-ups (what benchmarks also need lives in
`harness/`)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import discord
import httpx
import mcp_types as types
import pydantic
import pytest
from aiohttp import web
from kling3_discord import KlingBot, opened
from mcp import Client
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.client.stdio import StdioServerParameters

from harness import fake_discord as fd
from harness.helpers import SECRET, RawStdio, free_port, poller_env
from kling3_tools.config import Settings
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import CliOrigin, Delivery, TaskRecord, WebhookOrigin
from kling3_tools.domain.tasks import Task
from kling3_tools.mcp import manifest
from kling3_tools.mcp.serve import loaded_server
from kling3_tools.service import KlingService
from kling3_tools.workflows.schedule import SchedulePolicy

FAST = SchedulePolicy(prior_window=(0.2, 1.5), dense_interval=0.1, max_interval=0.5)

# How many tools the server serves: what its manifest lists (a test keeps the manifest current).
TOOL_COUNT = len(json.loads((Path(manifest.__file__).parent / manifest.MANIFEST).read_text())["tools"])


@contextlib.asynccontextmanager
async def fake_discord(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[fd.FakeDiscord]:
    fake = fd.FakeDiscord()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def bot_settings(sandbox, tmp_path: Path, **discord_settings: Any) -> Settings:
    return Settings.load(
        api_key=sandbox.api_key,
        base_url=sandbox.url,
        store={"url": f"sqlite:///{tmp_path / 'bot.db'}"},
        poller={"rate_limit_per_second": 100, "lease_seconds": 2},
        discord={"cooldown_seconds": 0, **discord_settings},
    )


@contextlib.asynccontextmanager
async def running_bot(settings: Settings, *, sandbox: bool = False) -> AsyncIterator[KlingBot]:
    """Log in (REST only), then receive the guild as the gateway would deliver it; with `sandbox`, on an
    embedded sandbox (which also hosts what the bot puts in storage)."""
    async with opened(settings, schedule=FAST, sandbox=sandbox) as bot:
        await bot.login("fake-bot-token")
        bot._connection.parse_guild_create(fd.guild_payload())
        try:
            yield bot
        finally:
            await bot.close()


def deliver(bot: KlingBot, payload: dict[str, Any]) -> None:
    """Hand an INTERACTION_CREATE to discord.py, exactly as its gateway handler does."""
    bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]


BOT_PROCESS = """
import asyncio, os, sys
import discord
import kling3_discord

discord.http.Route.BASE = os.environ["FAKE_DISCORD_API"]


async def connect(self, *, reconnect=True):  # the gateway, which the fake Discord does not speak
    while not self.is_closed():
        await asyncio.sleep(0.05)


kling3_discord.KlingBot.connect = connect
sys.exit(kling3_discord.main([]))
"""


def start_bot_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-c", BOT_PROCESS], env=env, stderr=stderr, cwd=Path(__file__).parents[1]
        )


def bot_process_env(fake: fd.FakeDiscord, sandbox, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ, "FAKE_DISCORD_API": f"{fake.url}/api/v10", "DISCORD_TOKEN": "fake-bot-token",
        "KLING_BASE_URL": sandbox.url, "KLING_API_KEY": sandbox.api_key,
        "KLING_STORE__URL": f"sqlite:///{tmp_path / 'bot.db'}",
    }  # fmt: skip


FAST_POLLER = {
    "KLING_POLLER__EXPECTED_SECONDS": "[0.3, 3.0]",
    "KLING_POLLER__DENSE_INTERVAL_SECONDS": "0.2",
    "KLING_POLLER__MAX_INTERVAL_SECONDS": "0.5",
    "KLING_POLLER__RATE_LIMIT_PER_SECOND": "50",
}


def server_env(sandbox, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KLING_BASE_URL": sandbox.url,
        "KLING_API_KEY": sandbox.api_key,
        "KLING_STORE__URL": f"sqlite:///{tmp_path / 'mcp.db'}",
        **FAST_POLLER,
        **extra,
    }


def settings_in(env: dict[str, str]) -> Settings:
    """The settings a server started with the environment `env` reads."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings.load()


@contextlib.asynccontextmanager
async def connect(sandbox, tmp_path: Path, env: dict[str, str] | None = None, **client: Any) -> AsyncIterator[Client]:
    """The SDK's client on the server object in this process (the SDK's in-memory transport), its core opened
    from the settings `env` says, as `kling3-mcp` would read them."""
    settings = settings_in(env or server_env(sandbox, tmp_path))
    async with loaded_server(settings, sandbox=False) as server, Client(server, **client) as session:
        yield session


@contextlib.asynccontextmanager
async def connect_stdio(
    sandbox, tmp_path: Path, env: dict[str, str] | None = None, **client: Any
) -> AsyncIterator[Client]:
    """`kling3-mcp` as a process, over stdio."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "kling3_tools.mcp"], env=env or server_env(sandbox, tmp_path)
    )
    async with Client(params, read_timeout_seconds=60, **client) as session:
        yield session


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


@contextlib.contextmanager
def http_server(env: dict[str, str], started: list[subprocess.Popen[bytes]] | None = None, port: int | None = None):
    """`kling3-mcp --transport http` once it answers (on `port`, else a free one); yields its URL (`started` gets
    the process)."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kling3_tools.mcp", "--transport", "http", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    if started is not None:
        started.append(process)
    try:
        for _ in range(300):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise RuntimeError("the MCP server exited") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def raw_server(env: dict[str, str]) -> RawStdio:
    """`kling3-mcp` past its handshake, spoken to byte for byte (its stderr kept)."""
    server = await RawStdio.spawn([sys.executable, "-m", "kling3_tools.mcp"], env)
    await server.handshake()
    return server


TYPES = ["pro-text-to-video", "std-text-to-video", "o3-pro-text-to-video", "o3-std-text-to-video"]


def settings_for(sandbox, db: Path, **poller) -> Settings:
    return Settings.load(
        api_key=sandbox.api_key,
        base_url=sandbox.url,
        store={"url": f"sqlite:///{db}"},
        poller={"webhook_secret": SECRET, "lease_seconds": 2, "rate_limit_per_second": 100, **poller},
    )


async def submit_batch(service: KlingService, url: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        request = GenerateRequest.build(type=TYPES[i % len(TYPES)], prompt=f"clip {i}", duration=3 + i % 13)
        ids.append((await service.submit(request, WebhookOrigin(url=url))).task_id)
    return ids


@contextlib.contextmanager
def locked(db: Path):
    """Another process's write transaction on the SQLite file, held until the block ends."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


API = "http://127.0.0.1:1"


KINDS = ["cli", "discord", "mcp", "webhook"]


def make_record(task_id: str, *, origin=None, due_at: float | None = 0.0, type_="pro-text-to-video", **fields):
    request = GenerateRequest.build(type=type_, prompt="x", **fields)
    task = Task(task_id=task_id, status="IN_PROGRESS", consumed_credits=request.estimated_credits())
    record = TaskRecord.submitted(task, request, api_url=API, origin=origin or CliOrigin())
    record.due_at = due_at
    return record


LIGHTHOUSE = """
title = "The lighthouse"
type = "o3-pro-text-to-video"
aspect_ratio = "16:9"

[[shots]]
id = "storm"
prompt = "A lighthouse in a storm, waves crashing"
duration = 5

[[shots]]
id = "snow"
type = "o3-pro-video-edit"
video = "@storm"
prompt = "Turn the storm into heavy snowfall"

[[shots]]
id = "ship"
type = "pro-image-to-video"
image = "@snow.last_frame"
prompt = "A tall ship sails past the snowy lighthouse"
"""


LEASE_SECONDS = 2.0


def worker_env(sandbox, store_url: str) -> dict[str, str]:
    poller = {
        "lease_seconds": LEASE_SECONDS,
        "rate_limit_per_second": 400,
        "expected_seconds": [1.0, 4.0],
        "dense_interval_seconds": 0.3,
        "max_interval_seconds": 1.0,
    }
    return poller_env(sandbox.url, sandbox.api_key, store_url, poller)


async def submit(service: KlingService, url: str, count: int) -> list[str]:
    async def one(i: int) -> str:
        # 3 s clips: 500 of them fit the sandbox's starting balance
        request = GenerateRequest.build(type=TYPES[i % len(TYPES)], prompt=f"clip {i}", duration=3)
        return (await service.submit(request, WebhookOrigin(url=url))).task_id

    ids: list[str] = []
    for first in range(0, count, 50):
        ids += await asyncio.gather(*(one(i) for i in range(first, min(first + 50, count))))
    return ids


async def delivered(service: KlingService) -> set[str]:
    records = await service.store.recent(limit=100_000)
    return {r.task_id for r in records if r.delivery is Delivery.DELIVERED}


ALICE, BOB = 800000000000000001, 800000000000000002  # two Discord users


def followups(fake: fd.FakeDiscord, payload: dict[str, Any]) -> list[fd.Call]:
    return [c for c in fake.calls if c.path.startswith(f"/webhooks/{fd.APP_ID}/{payload['token']}")]


def texts(calls: list[fd.Call]) -> str:
    return " | ".join(str((c.body or {}).get("content")) for c in calls)


def elicitation(action: str):
    asked: list[str] = []

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action=action, content={"approve": True} if action == "accept" else None)

    return answer, asked


class Heard:
    """What a client was told outside its requests."""

    def __init__(self) -> None:
        self.updates: list[str] = []
        self.logs: list[dict[str, Any]] = []

    async def on_message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updates.append(str(message.params.uri))

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params.data)

    def ready(self, task_id: str) -> bool:
        return any(entry.get("task_id") == task_id and "ready" in entry["message"] for entry in self.logs)


def legacy_client(sandbox, tmp_path: Path, heard: Heard) -> Any:
    """A 2025-11-25 client, in this process, that records what it is told."""
    return connect(sandbox, tmp_path, mode="legacy", message_handler=heard.on_message, logging_callback=heard.on_log)


# --- MCP Tasks ----------------------------------------------------------------------------------

TASKS = "io.modelcontextprotocol/tasks"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}},
}


async def ask(
    client: Client, method: str, params: dict[str, Any] | None = None, *, declared: bool = True, **capabilities: Any
) -> Any:
    """A request as it goes on the wire (the SDK's client has no API for tasks), on `client`'s connection; in the
    2026-07-28 era with the request's `_meta` envelope: `capabilities`, and the tasks extension unless `declared`
    is False."""
    params = dict(params or {})
    if client.session.protocol_version == "2026-07-28":
        capabilities |= {"extensions": {TASKS: {}}} if declared else {}
        params["_meta"] = MODERN_META | {"io.modelcontextprotocol/clientCapabilities": capabilities}
    return await client.session._dispatcher.send_raw_request(method, params, None)


async def start_task(client: Client, arguments: dict[str, Any], tool: str = "generate_video") -> dict[str, Any]:
    """A tool called as a task (2025-11-25: `params.task`; 2026-07-28: the extension declared): the created task."""
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if client.session.protocol_version != "2026-07-28":
        params["task"] = {"ttl": 60_000}
        return (await ask(client, "tools/call", params))["task"]  # type: ignore[no-any-return]
    return await ask(client, "tools/call", params)  # type: ignore[no-any-return]


async def task_ended(client: Client, task_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = await ask(client, "tasks/get", {"taskId": task_id})
        if task["status"] != "working" or time.monotonic() > deadline:
            return task  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)


class Params(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


class TaskNotifications(ClientExtension):
    """A client that declares the tasks extension and keeps the task notifications it is sent (either era's)."""

    identifier = TASKS

    def __init__(self) -> None:
        self.heard: list[dict[str, Any]] = []

    def notifications(self) -> list[NotificationBinding[Any]]:
        return [
            NotificationBinding(method=method, params_type=Params, handler=self.keep)
            for method in ("notifications/tasks/status", "notifications/tasks")
        ]

    async def keep(self, params: Params) -> None:
        self.heard.append(params.model_dump(by_alias=True))

    def statuses(self, task_id: str) -> list[str]:
        return [task["status"] for task in self.heard if task.get("taskId") == task_id]


def conformance_suite(package: str) -> Path:
    """The official MCP conformance suite at `package` (pinned, with the Node 22 it needs), installed once under
    .cache/ (which git ignores); its `conformance` command."""
    folder = Path(__file__).resolve().parents[1] / ".cache" / f"conformance-{package.rsplit('@', 1)[-1]}"
    binary = folder / "node_modules" / ".bin" / "conformance"
    if not binary.exists():
        if shutil.which("npm") is None:
            if os.environ.get("KLING3_REQUIRE_CONFORMANCE"):
                pytest.fail("npm is needed for the MCP conformance suite")
            pytest.skip("npm is not available: the MCP conformance suite cannot be installed")
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".install.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not binary.exists():
                subprocess.run(
                    [
                        "npm",
                        "install",
                        "--prefix",
                        str(folder),
                        "--no-audit",
                        "--no-fund",
                        "--silent",
                        "node@22",
                        package,
                    ],
                    check=True,
                    capture_output=True,
                    timeout=300,
                )
    return binary


def drive(tasks_client: list[str], era: str, *args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One run of the official tasks client's driver (`harness/ext_tasks/driver.mjs`): the steps it said."""
    done = subprocess.run([*tasks_client, "--era", era, *args], env=env, capture_output=True, text=True, timeout=150)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["step"] == "done", done.stdout[-2000:] + done.stderr[-2000:]
    return lines
