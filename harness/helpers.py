"""Test helpers: a real webhook receiver, `kling3` subprocesses, and waiting for a condition without fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kling3_tools.adapters.sandbox.server import ThreadedServer
from kling3_tools.workflows.notifiers import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature

SECRET = "whsec-test-secret"


@dataclass
class Receiver:
    """Records every webhook POST; `failing=True` answers 503 like a destination that is down,
    `answer_after` holds each answer that many seconds like a slow one."""

    secret: str = SECRET
    failing: bool = False
    answer_after: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    refused: int = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            if self.failing:
                self.refused += 1
                return Response(status_code=503)
            if not verify_signature(self.secret, body, request.headers.get(SIGNATURE_HEADER)):
                self.bad_signatures += 1
                return Response(status_code=401)
            event = json.loads(body)
            assert request.headers[EVENT_ID_HEADER] == event["event_id"]
            self.events.append(event)
            await asyncio.sleep(self.answer_after)
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def counts(self) -> Counter[str]:
        return Counter(event["task"]["task_id"] for event in self.events)


def npm_ci(folder: Path) -> None:
    """`npm ci` in `folder` (its pinned `package-lock.json`) once, under a lock: tests run in several processes."""
    with (folder / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "node_modules" / ".package-lock.json").is_file():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, check=True, capture_output=True)


def free_port() -> int:
    """A loopback port nothing listens on (until someone binds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports nothing listens on (for `kling3 poller --workers`, whose
    worker i listens on the port + i): a single free port's neighbour may be another test's."""
    while True:
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return first


def poller_env(api_url: str, api_key: str, store_url: str, poller: Mapping[str, Any]) -> dict[str, str]:
    """The environment of a `kling3 poller` process on this API and store, signing webhooks with SECRET;
    `poller` holds `[poller]` settings (JSON-encoded, as the settings read them from the environment)."""
    return {
        **os.environ,
        "KLING_BASE_URL": api_url,
        "KLING_API_KEY": api_key,
        "KLING_STORE__URL": store_url,
        "KLING_POLLER__WEBHOOK_SECRET": SECRET,
        **{f"KLING_POLLER__{name.upper()}": json.dumps(value) for name, value in poller.items()},
    }


def kling3(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m kling3_tools ARGS` to the end, with `env` added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "kling3_tools", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def start_kling3(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m kling3_tools ARGS` with its stderr (the log) written to `log`."""
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "kling3_tools", *args], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )


def start_receiver(receiver: Receiver) -> tuple[ThreadedServer, str]:
    server = ThreadedServer(receiver.app()).start()
    return server, f"{server.url}/hook"


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until `check()` is true; fail with a clear message after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


class RawStdio:
    """An MCP server process spoken to in newline-delimited JSON-RPC (2025-11-25), so that the process is ours
    to time, signal and close."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process, self.next_id = process, 0

    @classmethod
    async def spawn(cls, command: list[str], env: dict[str, str], *, stderr: int = subprocess.PIPE) -> RawStdio:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
        return cls(process)

    async def handshake(self) -> None:
        info = {"name": "raw", "version": "0"}
        await self.ask("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": info})
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def ask(self, method: str, params: dict[str, Any] | None = None, *, answer: bool = True) -> Any:
        """The whole answer (`result` or `error`); None without waiting for one when `answer` is False."""
        self.next_id += 1
        await self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})
        assert self.process.stdout is not None
        while answer:
            message = json.loads(await asyncio.wait_for(self.process.stdout.readline(), 30))
            if message.get("id") == self.next_id:
                return message
        return None
