"""The spend ledger, on both backends: bursts never beat a limit, no crash or lost answer hides a charge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from harness.helpers import eventually
from kling3_tools.adapters.client import AsyncKlingClient
from kling3_tools.adapters.store import TaskStore, open_store
from kling3_tools.config import Settings
from kling3_tools.domain.errors import OutcomeUnknownError, SpendingRefusedError, StoreError
from kling3_tools.domain.ledger import Attempt, AttemptState, Scope, SpendLimit, Usage
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import CliOrigin, DiscordOrigin, McpOrigin, TaskRecord
from kling3_tools.domain.reservations import Reservation, decide
from kling3_tools.domain.rules import quote
from kling3_tools.domain.tasks import Task
from kling3_tools.service import KlingService

from .conftest import FAST_RETRY, add_fault, set_options, stats
from .support import locked

REQUEST = GenerateRequest.build(type="pro-text-to-video", prompt="A lighthouse", duration=5)
PRICE = quote("pro-text-to-video", 5)
ALICE = DiscordOrigin(guild_id=1, channel_id=2, user_id=7)


@contextlib.asynccontextmanager
async def service_on(task_store: TaskStore, sandbox: Any, **settings: Any) -> AsyncIterator[KlingService]:
    """A service over `task_store` and the sandbox, as `KlingService.open` builds one."""
    loaded = Settings.load(api_key=sandbox.api_key, base_url=sandbox.url, **settings)
    async with httpx.AsyncClient(timeout=loaded.timeout_seconds) as http:
        client = AsyncKlingClient(sandbox.api_key, base_url=sandbox.url, retry=FAST_RETRY, http_client=http)
        yield KlingService(client, task_store, loaded, http=http)


def sandbox_task_ids(sandbox: Any) -> list[str]:
    return list(httpx.get(f"{sandbox.url}/sandbox/tasks").json())


BURSTS = {
    "budget": ({"budget": {"daily_credits": 5 * PRICE + PRICE // 2}}, [], CliOrigin(), 5, "[budget] daily_credits"),
    "mcp budget": (
        {},
        [SpendLimit("mcp", Scope("mcp"), daily_credits=3 * PRICE, daily_key="daily_credit_budget")],
        McpOrigin(session="s"),
        3,
        "[mcp] daily_credit_budget",
    ),
    "tasks at once": (
        {},
        [SpendLimit("discord", Scope("discord", 7), max_running=4)],
        ALICE,
        4,
        "max_concurrent_tasks_per_user",
    ),
    "cooldown": ({}, [SpendLimit("discord", Scope("discord", 7), cooldown_seconds=60)], ALICE, 1, "cooldown_seconds"),
}


@pytest.mark.parametrize("case", list(BURSTS))
async def test_twenty_at_once_never_start_more_than_a_limit_allows(store, sandbox, case):
    settings, limits, origin, allowed, named = BURSTS[case]
    set_options(sandbox, generate_delay=0.05, finish_seconds=60)  # the POSTs overlap
    async with service_on(store, sandbox, **settings) as service:
        results = await asyncio.gather(
            *(service.submit(REQUEST, origin, limits=limits) for _ in range(20)), return_exceptions=True
        )
    started = [r for r in results if isinstance(r, TaskRecord)]
    refused = [r for r in results if isinstance(r, SpendingRefusedError)]
    assert (len(started), len(refused)) == (allowed, 20 - allowed), results
    assert stats(sandbox)["requests"]["generate"] == allowed
    assert all(named in r.message and "Nothing was spent" in r.message for r in refused)
    assert await store.attempts() == []  # every attempt settled
    assert {r.task_id for r in await store.recent(limit=100)} == set(sandbox_task_ids(sandbox))


async def test_a_refusal_states_the_numbers(store, sandbox):
    async with service_on(
        store, sandbox, budget={"daily_credits": PRICE + 10, "max_credits_per_video": 500}
    ) as service:
        await service.submit(REQUEST)
        with pytest.raises(SpendingRefusedError) as spent:
            await service.submit(REQUEST)
        with pytest.raises(SpendingRefusedError) as dear:
            await service.submit(GenerateRequest.build(type="o3-pro-text-to-video", prompt="x", duration=15))
    assert f"would cost {PRICE} credits, but only 10 of the {PRICE + 10}-credit budget" in spent.value.message
    assert "would cost 720 credits, above the limit of 500 credits per video" in dear.value.message
    assert "[budget] max_credits_per_video" in dear.value.message
    assert stats(sandbox)["requests"]["generate"] == 1


async def test_an_unknown_outcome_counts_until_resolved_with_its_task(store, sandbox):
    set_options(sandbox, generate_delay=1.0)
    async with service_on(store, sandbox, timeout_seconds=0.3, budget={"daily_credits": PRICE + PRICE // 2}) as service:
        with pytest.raises(OutcomeUnknownError, match="may have been created and charged") as lost:
            await service.submit(REQUEST)
        [attempt] = await store.attempts()
        assert (attempt.attempt_id, attempt.state) == (lost.value.attempt_id, AttemptState.UNKNOWN)
        assert f"kling3 tasks resolve {attempt.attempt_id}" in lost.value.message
        with pytest.raises(SpendingRefusedError, match=f"{PRICE} spent or reserved"):
            await service.submit(REQUEST)  # it may have been charged: it blocks a spend past the budget
        assert stats(sandbox)["requests"]["generate"] == 1

        [task_id] = sandbox_task_ids(sandbox)  # what the dashboard shows
        record = await service.resolve(attempt.attempt_id, task_id=task_id)
    assert record is not None and record.task_id == task_id and record.request == REQUEST.recorded()
    assert await store.get(task_id) is not None and await store.attempts() == []
    assert (await store.usage(SpendLimit("budget", daily_credits=1))).credits == PRICE  # counted once, as the task


async def test_a_released_attempt_stops_counting(store, sandbox):
    set_options(sandbox, generate_delay=1.0)
    async with service_on(store, sandbox, timeout_seconds=0.3, budget={"daily_credits": PRICE}) as service:
        with pytest.raises(OutcomeUnknownError) as lost:
            await service.submit(REQUEST)
        assert await service.resolve(lost.value.attempt_id, task_id=None) is None
        set_options(sandbox, generate_delay=0)
        await service.submit(REQUEST)
    assert (await store.get_attempt(lost.value.attempt_id)).state is AttemptState.RELEASED


async def test_a_definite_refusal_by_the_api_releases_the_reservation(store, sandbox):
    set_options(sandbox, starting_balance=PRICE // 2)
    async with service_on(store, sandbox, budget={"daily_credits": PRICE}) as service:
        for _ in range(2):  # a 402 spends nothing, so it must not eat the budget either
            with pytest.raises(Exception, match="Not enough credits"):
                await service.submit(REQUEST)
    assert [a.state for a in await store.attempts(open_only=False)] == [AttemptState.RELEASED] * 2
    assert (await store.usage(SpendLimit("budget", daily_credits=1))).credits == 0


async def test_a_store_that_cannot_be_written_sends_nothing(store_url, sandbox):
    if store_url.startswith("postgresql"):
        with psycopg.connect(store_url, autocommit=True) as conn:
            name = conn.execute("SELECT current_database()").fetchone()[0]
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    read_only = await open_store_for(store_url)
    try:
        async with service_on(read_only, sandbox) as service:
            with pytest.raises(StoreError, match="Nothing was sent"):
                await service.submit(REQUEST)
    finally:
        await read_only.close()
    assert stats(sandbox)["requests"].get("generate", 0) == 0


async def open_store_for(url: str) -> TaskStore:
    from kling3_tools.adapters.store import SQLiteTaskStore, open_store

    opened = await open_store(url)
    if isinstance(opened, SQLiteTaskStore):
        opened._db.execute("PRAGMA query_only = ON")  # SQLite's own refusal to write: "attempt to write a readonly"
    return opened


async def test_a_failed_history_read_after_the_post_loses_nothing(store, sandbox, monkeypatch):
    async def history_down(*args: Any, **kwargs: Any) -> list[float]:
        raise StoreError("the history read failed")

    monkeypatch.setattr(store, "completion_times", history_down)
    async with service_on(store, sandbox) as service:
        record = await service.submit(REQUEST)
    saved = await store.get(record.task_id)
    assert saved is not None and saved.due_at == saved.submitted_at  # checked at once instead
    assert await store.attempts() == []


# --- through real processes -------------------------------------------------------------


def kling3_env(sandbox: Any, url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KLING_BASE_URL": sandbox.url,
        "KLING_API_KEY": sandbox.api_key,
        "KLING_STORE__URL": url,
        **extra,
    }


def kling3(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kling3_tools", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.process
async def test_a_generate_killed_mid_request_leaves_an_unknown_attempt_that_blocks_the_budget(
    store_url,
    sandbox,
    tmp_path: Path,
):
    set_options(sandbox, generate_delay=30)
    env = kling3_env(
        sandbox, store_url, KLING_TIMEOUT_SECONDS="2", KLING_MAX_RETRIES="0", KLING_BUDGET__DAILY_CREDITS=str(PRICE)
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kling3_tools", "generate", "A lighthouse", env=env, stderr=subprocess.DEVNULL
    )
    try:
        await eventually(lambda: stats(sandbox)["requests"].get("generate") == 1)  # the POST is in flight
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()

    listed = json.loads(kling3(env, "tasks", "--json").stdout)
    [attempt] = listed["attempts"]
    assert listed["tasks"] == [] and attempt["state"] == "submitting" and attempt["estimated_credits"] == PRICE

    def shows_unknown() -> bool:
        return json.loads(kling3(env, "tasks", "--json").stdout)["attempts"][0]["state"] == "unknown"

    await eventually(shows_unknown, timeout=30)  # once its deadline has passed, its process is surely gone
    table = kling3(env, "tasks").stdout
    assert attempt["attempt_id"] in table and "unknown" in table and "may have been charged" in table

    set_options(sandbox, generate_delay=0)
    again = kling3(env, "generate", "A second lighthouse")
    assert again.returncode == 1 and "[budget] daily_credits" in again.stderr and "Traceback" not in again.stderr
    assert stats(sandbox)["requests"]["generate"] == 1

    [task_id] = sandbox_task_ids(sandbox)
    resolved = kling3(env, "tasks", "resolve", attempt["attempt_id"], "--task-id", task_id)
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.strip() == task_id
    after = json.loads(kling3(env, "tasks", "--json").stdout)
    assert after["attempts"] == [] and [t["task_id"] for t in after["tasks"]] == [task_id]


@pytest.mark.process
async def test_ten_cli_processes_at_once_share_the_budget(store_url, sandbox):
    set_options(sandbox, generate_delay=0.2, finish_seconds=60)
    env = kling3_env(sandbox, store_url, KLING_BUDGET__DAILY_CREDITS=str(3 * PRICE))
    command = [sys.executable, "-m", "kling3_tools", "generate", "A lighthouse"]
    processes = [
        await asyncio.create_subprocess_exec(*command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(10)
    ]
    outputs = [await p.communicate() for p in processes]
    codes = sorted(p.returncode for p in processes)
    assert codes == [0] * 3 + [1] * 7, [err.decode() for _, err in outputs]
    refusals = [err.decode() for (_, err), p in zip(outputs, processes, strict=True) if p.returncode == 1]
    assert all("[budget] daily_credits" in text and "Traceback" not in text for text in refusals), refusals
    assert stats(sandbox)["requests"]["generate"] == 3


@pytest.mark.process
async def test_the_task_id_is_printed_before_anything_is_written(tmp_path, sandbox):
    env = kling3_env(sandbox, f"sqlite:///{tmp_path}/t.db")
    result = kling3(env, "generate", "A lighthouse")
    assert result.returncode == 0, result.stderr
    task_id = result.stdout.strip()
    assert f"Submitted {task_id}" in result.stderr


async def test_a_credit_figure_reported_mid_run_never_frees_the_budget(store, sandbox):
    async with service_on(store, sandbox, budget={"daily_credits": PRICE}) as service:
        record = await service.submit(REQUEST)
        record.consumed_credits = 0  # an API that reports 0 while the task is queued
        await store.save_progress(record)
        with pytest.raises(SpendingRefusedError):
            await service.submit(REQUEST)
    assert Task(task_id="x", consumed_credits=-100000).consumed_credits is None


async def test_a_submit_cancelled_while_it_waits_for_the_lock_is_released(tmp_path, sandbox):
    store = await open_store(f"sqlite:///{tmp_path}/t.db", busy_timeout=10)
    try:
        async with service_on(store, sandbox, budget={"daily_credits": PRICE}) as service:
            with locked(tmp_path / "t.db"):
                waiting = asyncio.create_task(service.submit(REQUEST))
                await asyncio.sleep(0.5)  # its batch waits for the file's write lock
                waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting

            async def released() -> bool:
                return [a.state for a in await store.attempts(open_only=False)] == [AttemptState.RELEASED]

            await eventually(released)
            await service.submit(REQUEST)  # the budget is whole again
    finally:
        await store.close()
    assert stats(sandbox)["requests"]["generate"] == 1


def test_a_batch_counts_every_accepted_attempt_against_every_limit_it_falls_under():
    user = Scope("discord", 7)
    one_at_a_time = SpendLimit("discord", user, max_running=1)
    unlimited = Reservation([Attempt.new(REQUEST, api_url="x", origin=ALICE, deadline=60)], limits=[])
    limited = Reservation([Attempt.new(REQUEST, api_url="x", origin=ALICE, deadline=60)], limits=[one_at_a_time])
    accepted = decide([unlimited, limited], lambda limit: Usage())
    assert accepted == [unlimited] and limited.refused is not None


async def test_a_5xx_that_says_rate_limited_is_never_resent(store, sandbox):
    add_fault(sandbox, endpoint="generate", status=503, code="RATE_LIMITED")
    async with service_on(store, sandbox) as service:
        with pytest.raises(OutcomeUnknownError):
            await service.submit(REQUEST)
    assert stats(sandbox)["requests"]["generate"] == 1


def test_a_user_scope_names_its_front_end():
    """The hourly totals file a user's spend under their front end (`discord:42`): a scope of a user alone would
    read a row no task is ever filed under, and see nothing spent."""
    assert Scope("discord", 42).name == "discord:42"
    assert Scope("mcp").name == "mcp:*" and Scope().name == "*:*"
    with pytest.raises(ValueError, match="names its front end"):
        Scope(user_id=42)
