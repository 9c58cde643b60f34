"""Shared fixtures: a real sandbox on a loopback port, a client pointed at it, a throwaway PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from harness.helpers import Receiver, start_receiver
from harness.postgres import PostgresCluster, find_bindir
from kling3_tools.adapters.client import AsyncKlingClient, RetryPolicy, WaitPolicy
from kling3_tools.adapters.sandbox.options import SandboxOptions
from kling3_tools.adapters.sandbox.server import SandboxServer
from kling3_tools.adapters.store import open_store

FAST_RETRY = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.5)
FAST_WAIT = WaitPolicy(first_interval=0.05, factor=1.5, max_interval=0.2)


SLOW_TIERS = ("process", "postgres", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tiers by what a test needs: `postgres` (the throwaway cluster) and `browser` (Chromium) from its
    fixtures; `process` (processes of its own) is marked by hand, and `_quick_tier_starts_no_process` holds it."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if fixtures & {"postgres_cluster", "postgres_url"} or params.get("store_url") == "postgres":
            item.add_marker(pytest.mark.postgres)
        if "browser" in fixtures:
            item.add_marker(pytest.mark.browser)


class _NoProcess(subprocess.Popen):  # type: ignore[type-arg]
    def __init__(self, args: Any, *rest: Any, **options: Any) -> None:
        raise AssertionError(f"this test starts a process ({args!r}): mark it `process` (see conftest)")


@pytest.fixture(autouse=True)
def _quick_tier_starts_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test outside the slow tiers that starts a process fails, so `-m "not process and ..."` stays quick."""
    if not any(request.node.get_closest_marker(tier) for tier in SLOW_TIERS):
        monkeypatch.setattr(subprocess, "Popen", _NoProcess)


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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the session; CI sets KLING3_REQUIRE_POSTGRES so that a missing server fails, not skips."""
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("KLING3_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = PostgresCluster(bindir).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh database with the project's schema."""
    return postgres_cluster.migrated_database()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tasks.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def store(store_url):
    store = await open_store(store_url)
    yield store
    await store.close()


@pytest.fixture
async def other(store_url):
    """A second store on the same file or database, as another process would open it."""
    other = await open_store(store_url)
    yield other
    await other.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a loopback port; its URL is `receiver.url`."""
    receiver = Receiver()
    server, url = start_receiver(receiver)
    receiver.url = url  # type: ignore[attr-defined]
    yield receiver
    server.stop()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    # Inputs are not fetched: tests give example URLs, and nothing may leave loopback (tests that need it say so).
    with SandboxServer(SandboxOptions(finish_seconds=0.3, fetch_inputs=False)) as server:
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


@pytest.fixture
async def fake(monkeypatch):
    """A fake Discord API on a loopback port, which discord.py is pointed at."""
    from .support import fake_discord

    async with fake_discord(monkeypatch) as server:
        yield server
