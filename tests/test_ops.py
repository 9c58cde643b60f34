"""What an operator sees: `/healthz`, `/readyz` and `/metrics` on each kind of long-running process, metrics that
move as tasks move, and readiness that follows the store down and back up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.helpers import eventually, free_port, free_ports, start_kling3
from kling3_tools.config import MetricsSettings, Settings
from kling3_tools.config_sources import ConfigError
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import Outcome

from .conftest import set_options
from .support import FAST, bot_settings, connect, fake_discord, make_record, server_env, submit, worker_env


async def get(address: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=15) as http:
        return await http.get(f"http://{address}{path}")


async def scrape(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = await get(address, "/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in metrics.items() if n == name and wanted <= found)


async def ready(address: str) -> tuple[int, dict[str, Any]]:
    try:
        answer = await get(address, "/readyz")
    except httpx.TransportError:
        return 0, {}
    return answer.status_code, answer.json()


async def until_ready(address: str, status: str = "ready", timeout: float = 60) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal found
        _, found = await ready(address)
        return found.get("status") == status

    await eventually(check, timeout=timeout)
    return found


async def not_ready(address: str) -> bool:
    return (await ready(address))[0] == 503


@contextlib.contextmanager
def pollers(args: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    process = start_kling3(args, env, log)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.process
async def test_each_poller_worker_serves_its_endpoints_and_metrics_follow_the_tasks(sandbox, receiver, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    store_url = f"sqlite:///{tmp_path / 'tasks.db'}"
    port = free_ports(2)
    env = {**worker_env(sandbox, store_url), "KLING_METRICS__LISTEN": f"127.0.0.1:{port}"}
    addresses = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]  # worker i listens on the port + i
    with pollers(["-v", "poller", "--workers", "2"], env, tmp_path / "poller.log"):
        for address in addresses:
            await until_ready(address)
            assert (await get(address, "/healthz")).text == "ok\n"
        before = [await scrape(address) for address in addresses]
        assert value(before[0], "kling3_build_info", role="poller") == 1
        settings = Settings.load(api_key=sandbox.api_key, base_url=sandbox.url, store={"url": store_url})
        from kling3_tools.service import KlingService

        async with KlingService.open(settings, schedule=FAST) as service:
            ids = await submit(service, receiver.url, 4)
        await eventually(lambda: len(receiver.events) == len(ids), timeout=60)

        async def total(name: str, **labels: str) -> float:
            return sum([value(await scrape(address), name, **labels) for address in addresses])

        async def all_delivered() -> bool:
            return await total("kling3_deliveries_total", kind="webhook", result="delivered") == 4

        await eventually(all_delivered, timeout=30)
        assert await total("kling3_status_checks_total", code="200") >= 4
        assert await total("kling3_rate_limit_tokens_taken_total") >= 4
        assert await total("kling3_delivery_lag_seconds_count", kind="webhook") == 4
        assert await total("kling3_store_seconds_count", operation="claim") > sum(
            value(b, "kling3_store_seconds_count", operation="claim") for b in before
        )
        after = await scrape(addresses[0])  # the store's figures are the same from any worker
        assert value(after, "kling3_tasks", state="succeeded") + value(after, "kling3_tasks", state="failed") == 4
        assert value(after, "kling3_tasks", state="running") == 0
        assert value(after, "kling3_tasks_due") == 0
        # Each SQLite worker sends half the rate, but the capacity is the whole rate's (400/s here).
        from kling3_tools.adapters.store import open_store
        from kling3_tools.adapters.store.stats import capacity_of

        store = await open_store(store_url)
        try:
            capacity = capacity_of(await store.stats(), 400)
        finally:
            await store.close()
        assert capacity is not None
        for address in addresses:
            assert value(await scrape(address), "kling3_capacity_running_videos") == capacity.running_at_once


async def test_readiness_fails_while_postgresql_is_down_and_recovers(sandbox, postgres_cluster, postgres_url, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    env = {**worker_env(sandbox, postgres_url), "KLING_METRICS__LISTEN": address}
    with pollers(["-v", "poller"], env, tmp_path / "poller.log"):
        found = await until_ready(address)
        assert found["checks"]["store"] == "ok" and found["checks"]["poller"] == "1 following"
        with postgres_cluster.down():
            await eventually(lambda: not_ready(address), timeout=30)
            _, found = await ready(address)
            assert found["status"] == "not ready" and found["checks"]["store"] != "ok", found
            assert (await get(address, "/healthz")).status_code == 200  # alive: no restart for a store blip
            assert (await get(address, "/metrics")).status_code == 200  # stale figures, still scrapeable
        found = await until_ready(address, timeout=90)
        assert found["checks"]["store"] == "ok"


async def test_readiness_names_a_schema_that_is_behind(sandbox, postgres_url, tmp_path):
    import psycopg

    url = postgres_url
    address = f"127.0.0.1:{free_port()}"
    with pollers(["-v", "poller"], {**worker_env(sandbox, url), "KLING_METRICS__LISTEN": address}, tmp_path / "p.log"):
        await until_ready(address)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE kling3_schema SET version = version - 1")
        await eventually(lambda: not_ready(address), timeout=30)
        assert "kling3 store migrate" in (await ready(address))[1]["checks"]["store"]


async def test_the_mcp_server_counts_reservations_and_refusals_by_limit(sandbox, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    env = server_env(sandbox, tmp_path, KLING_METRICS__LISTEN=address, KLING_MCP__DAILY_CREDIT_BUDGET="500")
    async with connect(sandbox, tmp_path, env) as session:
        await until_ready(address)
        fields = {"type": "std-text-to-video", "prompt": "a fox", "duration": 5, "wait": False}
        first = await session.call_tool("generate_video", fields)
        second = await session.call_tool("generate_video", fields)
        assert not first.is_error, first.content
        assert second.is_error
        metrics = await scrape(address)
    assert value(metrics, "kling3_build_info", role="mcp") == 1
    assert value(metrics, "kling3_reservations_total", result="reserved") == 1
    assert value(metrics, "kling3_reservations_total", result="refused") == 1
    assert value(metrics, "kling3_refusals_total", limit="[mcp] daily_credit_budget") == 1


async def test_the_discord_bot_serves_its_endpoints(monkeypatch, sandbox, tmp_path):
    from kling3_discord import opened

    address = f"127.0.0.1:{free_port()}"
    settings = bot_settings(sandbox, tmp_path).model_copy(update={"metrics": MetricsSettings(listen=address)})
    async with fake_discord(monkeypatch), opened(settings, schedule=FAST) as bot:
        status = await ready(address)
        assert status[0] == 503 and status[1]["status"] == "not ready"  # no poller until it logs in
        await bot.login("fake-bot-token")
        try:
            found = await until_ready(address)
            assert found["checks"]["poller"] == "1 following"
            metrics = await scrape(address)
            assert value(metrics, "kling3_build_info", role="discord") == 1
        finally:
            await bot.close()


async def test_a_backlog_beyond_the_budget_reads_degraded_not_down(sandbox, tmp_path):
    """Readiness degrades (200, `degraded`) when more videos run than the status-check budget can follow."""
    from kling3_tools.ops.endpoints import Readiness
    from kling3_tools.ops.metrics import PrometheusObserver
    from kling3_tools.service import KlingService

    settings = Settings.load(
        api_key=sandbox.api_key, base_url=sandbox.url, store={"url": f"sqlite:///{tmp_path / 't.db'}"}
    )
    observer = PrometheusObserver("test", settings.poller.rate_limit_per_second)
    async with KlingService.open(settings, observer=observer) as service, service.polling():
        await eventually(lambda: all(p.is_following for p in service.pollers))
        await observer.figures.refresh(service.store)
        assert (await Readiness(service, observer).verdict())[0] == "ready"
        now = time.time()
        for i in range(10):  # 30 checks and 120 s a video: 5 checks/s follow 20 running at once
            done = make_record(f"done{i}", due_at=None)
            done.poll_count, done.submitted_at = 30, now - 300
            done.finish(Outcome.SUCCEEDED, now - 180)
            await service.store.add(done)
        for i in range(25):
            await service.store.add(make_record(f"running{i}", due_at=now + 3600))
        observer.figures.latest = None  # read the store again now
        await observer.figures.refresh(service.store)
        status, checks = await Readiness(service, observer).verdict()
    assert status == "degraded" and "rate_limit_per_second" in checks["capacity"]


def test_a_metrics_address_must_be_host_and_port():
    for bad in ("9464", "localhost:", ":9464", "host:99999", "host:port"):
        with pytest.raises(ConfigError, match=r"metrics.listen: must be host:port"):
            Settings.load(metrics={"listen": bad})
    assert Settings.load(metrics={"listen": "[::1]:9464"}).metrics.address == ("::1", 9464)


@pytest.mark.process
def test_a_taken_metrics_port_is_one_clear_line(sandbox, tmp_path):
    import socket
    import subprocess
    import sys

    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {**worker_env(sandbox, f"sqlite:///{tmp_path / 't.db'}"), "KLING_METRICS__LISTEN": address}
        done = subprocess.run(
            [sys.executable, "-m", "kling3_tools", "poller"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2, done.stderr  # a configuration error: `--workers` does not restart it
    assert f"cannot listen on [metrics] listen = {address}" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_metric_names_are_those_the_dashboard_charts():
    """Every metric the Grafana dashboard queries exists (a renamed metric would leave a chart empty)."""
    from kling3_tools.ops.metrics import PrometheusObserver

    observer = PrometheusObserver("test", 5.0)
    observer.delivery("cli", "delivered", 1.0)
    observer.reservation("refused")
    observer.refusal("[budget] daily_credits")
    observer.status_answer("200")
    exposed = {family.name for family in text_string_to_metric_families(observer.exposition().decode())}
    exposed |= {"kling3_tasks", "kling3_tasks_due", "kling3_oldest_due_seconds", "kling3_capacity_running_videos"}
    dashboard = json.loads((Path(__file__).resolve().parents[1] / "deploy" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in __import__("re").findall(r"kling3_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    suffixes = ("_total", "_bucket", "_count", "_sum")
    assert {name.removesuffix(next((s for s in suffixes if name.endswith(s)), "")) for name in queried} <= exposed


@contextlib.asynccontextmanager
async def exposed_service(sandbox, tmp_path: Path, listen: str | None = None):
    from kling3_tools.ops.endpoints import serving
    from kling3_tools.ops.metrics import PrometheusObserver
    from kling3_tools.service import KlingService

    address = listen or f"127.0.0.1:{free_port()}"
    loaded = Settings.load(
        api_key=sandbox.api_key,
        base_url=sandbox.url,
        store={"url": f"sqlite:///{tmp_path / 't.db'}", "busy_timeout_seconds": 30},
        metrics={"listen": address},
    )
    observer = PrometheusObserver("test", 5)
    async with KlingService.open(loaded, observer=observer) as service, service.polling(), serving(service):
        await eventually(lambda: all(p.is_following for p in service.pollers))
        yield service, observer, address


async def test_a_crowd_of_probes_and_scrapes_costs_the_store_one_query_at_a_time(sandbox, tmp_path):
    async with exposed_service(sandbox, tmp_path) as (_, _, address):
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16)) as http:  # under the cap of 32
            answers = await asyncio.gather(
                *(http.get(f"http://{address}{path}", timeout=30) for path in ["/readyz", "/metrics"] * 100)
            )
        assert {answer.status_code for answer in answers} == {200}
        metrics = await scrape(address)
    assert value(metrics, "kling3_store_seconds_count", operation="stats") <= 2
    assert value(metrics, "kling3_store_seconds_count", operation="check_schema") <= 2


async def test_more_connections_than_the_cap_are_refused_not_held(sandbox, tmp_path):
    async with exposed_service(sandbox, tmp_path) as (_, _, address):
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as http:
            answers = await asyncio.gather(*(http.get(f"http://{address}/healthz", timeout=30) for _ in range(200)))
        codes = [answer.status_code for answer in answers]
        assert 503 in codes and set(codes) <= {200, 503}  # answered at once, not held open
        assert (await get(address, "/healthz")).status_code == 200  # and served again once the crowd is gone
        assert (await get(address, "/healthz")).status_code == 200  # and it serves again at once


async def test_probes_on_a_locked_sqlite_file_never_pile_up_threads(sandbox, tmp_path):
    import threading

    from .support import locked

    async with exposed_service(sandbox, tmp_path) as (service, _, address):
        assert (await ready(address))[0] == 200
        before = threading.active_count()
        with locked(tmp_path / "t.db"):
            writes = asyncio.create_task(service.store.release_all(owner="nobody"))  # waits on the lock
            for _ in range(2):
                await asyncio.sleep(1.1)  # past the last verdict's age: probes ask the store again
                answers = await asyncio.gather(*(ready(address) for _ in range(20)))
                assert {code for code, _ in answers} == {503}
            assert threading.active_count() <= before + 3  # the write, one stuck check, the executor's spare
        await writes
        await eventually(lambda: is_ready(address), timeout=30)


async def is_ready(address: str) -> bool:
    return (await ready(address))[0] == 200


@pytest.mark.process
async def test_a_client_that_never_reads_cannot_hold_the_process_at_stop(sandbox, tmp_path):
    import signal
    import socket

    address = f"127.0.0.1:{free_port()}"
    env = {**worker_env(sandbox, f"sqlite:///{tmp_path / 't.db'}"), "KLING_METRICS__LISTEN": address}
    process = start_kling3(["poller"], env, tmp_path / "poller.log")
    try:
        await until_ready(address)
        host, port = address.split(":")
        stuck = socket.create_connection((host, int(port)))
        stuck.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)  # pipelined, never read
        await asyncio.sleep(1)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
        assert time.monotonic() - started < 10 and process.returncode == 0, (tmp_path / "poller.log").read_text()
        stuck.close()
    finally:
        if process.poll() is None:
            process.kill()


async def test_refusals_are_counted_by_limit_wherever_they_are_decided(sandbox, tmp_path):
    from kling3_tools.domain.errors import SpendingRefusedError
    from kling3_tools.domain.ledger import SpendLimit

    limit = SpendLimit("discord", daily_credits=100, daily_key="daily_credit_budget_per_user")
    async with exposed_service(sandbox, tmp_path) as (service, _, address):
        with pytest.raises(SpendingRefusedError):
            await service.check_spend(300, [limit])  # early, before asking anyone to confirm
        with pytest.raises(SpendingRefusedError):
            await service.submit(GenerateRequest.build(type="std-text-to-video", prompt="x"), limits=[limit])
        metrics = await scrape(address)
    assert value(metrics, "kling3_refusals_total", limit="[discord] daily_credit_budget_per_user") == 2
    assert value(metrics, "kling3_reservations_total", result="refused") == 1
    assert value(metrics, "kling3_store_errors_total") == 0  # a refusal is the store answering, not failing


@pytest.mark.skipif(not __import__("socket").has_dualstack_ipv6(), reason="no dual-stack IPv6 here")
async def test_listening_on_every_ipv6_address_takes_ipv4_too(sandbox, tmp_path):
    port = free_port()
    async with exposed_service(sandbox, tmp_path, f"[::]:{port}"):
        assert (await get(f"127.0.0.1:{port}", "/healthz")).status_code == 200
        assert (await get(f"[::1]:{port}", "/healthz")).status_code == 200
