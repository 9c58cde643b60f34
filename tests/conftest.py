"""Shared fixtures: a real sandbox on a loopback port, and a client pointed at it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from kling3_tools.client import AsyncKlingClient, RetryPolicy, WaitPolicy
from kling3_tools.sandbox.options import SandboxOptions
from kling3_tools.sandbox.server import SandboxServer

FAST_RETRY = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.5)
FAST_WAIT = WaitPolicy(first_interval=0.05, factor=1.5, max_interval=0.2)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads the developer's real key, config or data folders."""
    for name in list(os.environ):
        if name.startswith("KLING_"):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxOptions(finish_seconds=0.3)) as server:
        yield server


@pytest.fixture
async def client(sandbox: SandboxServer) -> AsyncIterator[AsyncKlingClient]:
    async with AsyncKlingClient(sandbox.api_key, base_url=sandbox.url, retry=FAST_RETRY) as kling:
        yield kling


def stats(sandbox: SandboxServer) -> dict[str, Any]:
    """The sandbox's counters, read over HTTP like any outside observer would."""
    return httpx.get(f"{sandbox.url}/sandbox/stats").json()  # type: ignore[no-any-return]


def set_options(sandbox: SandboxServer, **options: Any) -> None:
    httpx.post(f"{sandbox.url}/sandbox/options", json=options).raise_for_status()


def add_fault(sandbox: SandboxServer, **fault: Any) -> None:
    httpx.post(f"{sandbox.url}/sandbox/faults", json=fault).raise_for_status()
