"""A store that blips never costs a video: every task the API created is recorded, followed and delivered,
and long-lived processes serve again within 2 s of PostgreSQL answering again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from harness.helpers import SECRET, eventually, kling3, start_kling3
from kling3_tools.adapters.store import open_store
from kling3_tools.config import Settings
from kling3_tools.domain.errors import KlingError
from kling3_tools.domain.ledger import Attempt, AttemptState, SpendLimit
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import Delivery, WebhookOrigin
from kling3_tools.service import KlingService

from .conftest import set_options, stats
from .support import FAST, connect_stdio, server_env, text, worker_env

HOLD_SECONDS = 4.0  # the sandbox holds each generate's answer this long after creating the task


@pytest.mark.parametrize("outage", ["restart", "down_across_the_answer"])
async def test_a_cli_generate_answered_across_a_postgresql_outage_is_recorded_and_delivered(
    sandbox, receiver, postgres_cluster, postgres_url, tmp_path, outage
):
    """`restart`: every pooled connection is cut while the answer is held. `down_across_the_answer`: the answer
    arrives while the server is down, and the CLI holds it until the server is back 3 s later."""
    set_options(sandbox, generate_delay=HOLD_SECONDS, finish_seconds=0.5)
    env = worker_env(sandbox, postgres_url)
    cli = generating(["a fox", "--json"], receiver.url, env)
    await eventually(lambda: stats(sandbox)["tasks"] == 1, timeout=30)  # created; its answer is held
    if outage == "restart":
        await asyncio.to_thread(postgres_cluster.restart)
    else:
        with postgres_cluster.down():
            await asyncio.sleep(HOLD_SECONDS + 3)
    out, err = await asyncio.to_thread(cli.communicate, timeout=60)
    assert cli.returncode == 0, err
    task_id = json.loads(out)["task_id"]

    poller = start_kling3(["poller"], env, tmp_path / "poller.log")
    try:
        await eventually(lambda: receiver.counts() == {task_id: 1}, timeout=30)
    finally:
        poller.terminate()
        poller.wait(timeout=20)
    await _recorded_and_settled(postgres_url, task_id)


async def test_an_mcp_generate_answered_across_a_postgresql_restart_is_recorded_and_delivered(
    sandbox, postgres_cluster, postgres_url, tmp_path
):
    set_options(sandbox, finish_seconds=0.5)
    env = server_env(sandbox, tmp_path, KLING_STORE__URL=postgres_url)
    video = {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 0}
    async with connect_stdio(sandbox, tmp_path, env) as client:
        warm = await asyncio.gather(
            *(client.call_tool("generate_video", video) for _ in range(6)),
            *(client.call_tool("list_videos", {}) for _ in range(20)),
        )
        assert not any(made.is_error for made in warm)  # the server's pool holds several connections now
        set_options(sandbox, generate_delay=HOLD_SECONDS)
        call = asyncio.create_task(client.call_tool("generate_video", video))
        await eventually(lambda: stats(sandbox)["tasks"] == 7, timeout=30)
        await asyncio.to_thread(postgres_cluster.restart)
        made = await call
        assert not made.is_error, text(made)
        task_id = made.structured_content["task_id"]
        store = await open_store(postgres_url)
        try:  # the server's own poller follows it to its end and delivers it (to the client's resources)

            async def delivered() -> bool:
                record = await store.get(task_id)
                return record is not None and record.delivery is Delivery.DELIVERED

            await eventually(delivered, timeout=30)
        finally:
            await store.close()
    await _recorded_and_settled(postgres_url, task_id)


def generating(args: list[str], webhook: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`kling3 generate ARGS --notify-webhook WEBHOOK`, running."""
    command = [sys.executable, "-m", "kling3_tools", "generate", *args, "--notify-webhook", webhook]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def _recorded_and_settled(store_url: str, task_id: str) -> None:
    store = await open_store(store_url)
    try:
        record = await store.get(task_id)
        attempts = await store.attempts(open_only=False, limit=100)
    finally:
        await store.close()
    assert record is not None and record.outcome is not None and record.delivery is Delivery.DELIVERED
    assert [a.state for a in attempts if a.task_id == task_id] == [AttemptState.SUBMITTED]
    assert {a.state for a in attempts} == {AttemptState.SUBMITTED}  # nothing unknown, nothing open


def _settings(sandbox, store_url: str) -> Settings:
    return Settings.load(
        api_key=sandbox.api_key,
        base_url=sandbox.url,
        store={"url": store_url},
        poller={"webhook_secret": SECRET, "lease_seconds": 2, "rate_limit_per_second": 100},
    )


@pytest.mark.process
async def test_a_task_id_kept_on_its_attempt_is_recorded_followed_and_delivered_by_the_next_sweep(
    sandbox, receiver, store_url
):
    """A process that got a task id but could not record its task (and then died) leaves the id on its attempt:
    `kling3 tasks` shows it as created, and a poller records it, follows it and delivers it."""
    set_options(sandbox, finish_seconds=0.5)
    request = GenerateRequest.build(type="std-text-to-video", prompt="kept", duration=5)
    async with KlingService.open(_settings(sandbox, store_url), schedule=FAST) as service:
        attempt = Attempt.new(request, api_url=service.api_url, origin=WebhookOrigin(url=receiver.url), deadline=0.01)
        await service.store.reserve(attempt, [])
        task = await service.client.generate(request)
        assert await service.store.keep_task_id(attempt.attempt_id, task.task_id)
        await asyncio.sleep(0.05)  # past the attempt's deadline: without its task id it would read `unknown`

        listed = await asyncio.to_thread(kling3, "tasks", "--json", KLING_STORE__URL=store_url)
        assert listed.returncode == 0, listed.stderr
        [shown] = json.loads(listed.stdout)["attempts"]
        assert (shown["state"], shown["task_id"]) == ("created", task.task_id)
        plain = await asyncio.to_thread(kling3, "tasks", KLING_STORE__URL=store_url)
        assert f"task {task.task_id}: the next poller sweep records and follows it" in plain.stdout

        poller = service.poller()
        job = asyncio.create_task(poller.run())
        try:
            await eventually(lambda: receiver.counts() == {task.task_id: 1}, timeout=30)
        finally:
            poller.stop()
            await job
        settled = await service.store.get_attempt(attempt.attempt_id)
        record = await service.get(task.task_id)
    assert settled is not None and (settled.state, settled.task_id) == (AttemptState.SUBMITTED, task.task_id)
    assert record is not None and record.submitted_at == settled.created_at and record.poll_count >= 1


async def test_an_api_that_answers_two_generates_with_one_task_id_leaves_the_second_counted_and_unknown(
    sandbox, receiver, store_url
):
    """A lying API: the second generate's task id is already recorded. Its id is kept on its attempt, the poller
    cannot record it twice, and it stays counted as `unknown` for a person to resolve."""
    set_options(sandbox, task_id_template="same-task")
    request = GenerateRequest.build(type="std-text-to-video", prompt="twice", duration=5)
    origin = WebhookOrigin(url=receiver.url)
    async with KlingService.open(_settings(sandbox, store_url), schedule=FAST) as service:
        first = await service.submit(request, origin)
        with pytest.raises(KlingError, match=r"could not be recorded at once.*a poller records"):
            await service.submit(request, origin)
        [kept] = [a for a in await service.store.attempts() if a.awaiting_record]
        poller = service.poller()
        job = asyncio.create_task(poller.run())
        try:

            async def unknown() -> bool:
                attempt = await service.store.get_attempt(kept.attempt_id)
                return attempt is not None and attempt.state is AttemptState.UNKNOWN

            await eventually(unknown, timeout=30)
        finally:
            poller.stop()
            await job
        attempt = await service.store.get_attempt(kept.attempt_id)
        spent = await service.usage(SpendLimit("budget", daily_credits=1_000_000))
    assert first.task_id == "same-task" and attempt is not None
    assert "already recorded for another generate" in (attempt.note or "")
    assert spent.credits == 2 * request.estimated_credits()  # both may have been charged: both count


async def test_the_mcp_server_accepts_a_generate_within_2_s_of_postgresql_answering_again(
    sandbox, postgres_cluster, postgres_url, tmp_path
):
    """Down longer than a statement waits (so the server's poller fails sweeps meanwhile), then back."""
    env = server_env(sandbox, tmp_path, KLING_STORE__URL=postgres_url)
    async with connect_stdio(sandbox, tmp_path, env) as client:
        warm = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 0})
        assert not warm.is_error, text(warm)
        with postgres_cluster.down():
            await asyncio.sleep(12)
        back = time.monotonic()  # `pg_ctl start -w` returned: the server accepts connections
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "y", "wait_seconds": 0})
        took = time.monotonic() - back
    assert not made.is_error, text(made)
    assert took < 2.0, took


async def test_chaos_every_billed_task_is_recorded_and_every_webhook_delivered_once(
    sandbox, receiver, postgres_cluster, postgres_url, tmp_path
):
    """About a minute of what an operator fears: two pollers on PostgreSQL, bursts from the CLI and an MCP
    client, a flaky API (500s and 429s), a poller SIGKILLed, PostgreSQL restarted twice."""
    set_options(sandbox, finish_seconds=3.0, finish_spread=0.5, error_rate=0.1, rate_limit_per_second=30)
    budget = 50 * 300  # below what the bursts ask for: the budget must hold against them
    limits = {"KLING_BUDGET__DAILY_CREDITS": str(budget)}
    env = {**worker_env(sandbox, postgres_url), **limits}
    logs = iter(tmp_path / f"poller{n}.log" for n in range(10))
    pollers = [start_kling3(["poller"], env, next(logs)) for _ in range(2)]
    clis: list[subprocess.Popen[str]] = []
    mcp_bursts: list[asyncio.Task[list[object]]] = []
    video = {"type": "std-text-to-video", "prompt": "chaos", "wait_seconds": 0}
    try:
        async with connect_stdio(
            sandbox, tmp_path, server_env(sandbox, tmp_path, KLING_STORE__URL=postgres_url, **limits)
        ) as client:
            for round_ in range(12):
                clis += [generating([f"cli {round_}"], receiver.url, env) for _ in range(3)]
                mcp_bursts.append(
                    asyncio.ensure_future(
                        asyncio.gather(*(client.call_tool("generate_video", video) for _ in range(4)))
                    )
                )
                if round_ in (2, 8):
                    await asyncio.to_thread(postgres_cluster.restart)
                if round_ == 5:
                    pollers[0].kill()
                    pollers[0].wait(timeout=10)
                    pollers[0] = start_kling3(["poller"], env, next(logs))
                await asyncio.sleep(4)
            answers = [answer for burst in await asyncio.gather(*mcp_bursts) for answer in burst]
            cli_errors = await asyncio.to_thread(lambda: [cli.communicate(timeout=120)[1] for cli in clis])
            store = await open_store(postgres_url)
            try:

                async def all_ended_and_delivered() -> bool:
                    records = await store.recent(limit=10_000)
                    return all(r.outcome is not None and r.delivery is Delivery.DELIVERED for r in records)

                await eventually(all_ended_and_delivered, timeout=120)
                records = await store.recent(limit=10_000)
                attempts = await store.attempts(open_only=False, limit=10_000)
            finally:
                await store.close()
    finally:
        for poller in pollers:
            poller.terminate()
        for poller in pollers:
            poller.wait(timeout=20)
    refusals = [e for e in cli_errors if "daily_credits" in e] + [a for a in answers if "daily_credits" in text(a)]
    assert refusals, "the bursts never reached the budget"
    assert not [e for e in cli_errors if "could not be recorded" in e or "Traceback" in e], cli_errors
    assert stats(sandbox)["tasks"] == len(records)  # every billed task is recorded
    open_attempts = [a for a in attempts if a.state in (AttemptState.SUBMITTING, AttemptState.UNKNOWN)]
    assert all(a.state is AttemptState.UNKNOWN and "Server error" in (a.note or "") for a in open_attempts), [
        (a.state, a.note) for a in open_attempts
    ]  # only a generate the API answered with a 500 is left open: it may exist
    webhook_tasks = {r.task_id for r in records if r.origin.kind == "webhook"}
    assert webhook_tasks and set(receiver.counts()) == webhook_tasks
    assert max(receiver.counts().values()) == 1  # delivered exactly once
    spent = sum(r.consumed_credits or r.estimated_credits for r in records) + sum(
        a.estimated_credits for a in open_attempts
    )
    assert spent <= budget
