"""MCP Tasks in both protocol eras (2025-11-25 tasks in the core, 2026-07-28 the tasks extension): a spending
tool's handle is minted once its video task is recorded, read from the store, bound to its owner; cancel ends the
handle while the video goes on; clients that do not ask get today's answers. The official tasks client
(`@modelcontextprotocol/ext-tasks`) drives the server over stdio and HTTP, across a `kill -9`, and the official
conformance suite's tasks scenarios run where they apply."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from harness.ext_tasks_client import installed
from harness.helpers import eventually, free_port
from kling3_tools.adapters.store import open_store
from kling3_tools.domain.errors import StoreError
from kling3_tools.domain.mcp_tasks import McpTaskHandle
from kling3_tools.domain.records import LOCAL_OWNER

from .conftest import set_options, stats
from .support import (
    MODERN_META,
    TASKS,
    TaskNotifications,
    ask,
    conformance_suite,
    connect,
    drive,
    elicitation,
    http_server,
    server_env,
    start_task,
    task_ended,
)

ROOT = Path(__file__).resolve().parents[1]
TASKS_CONFORMANCE = "@modelcontextprotocol/conformance@0.2.0-alpha.12"  # the first releases with tasks scenarios
ERAS = ["legacy", "2026-07-28"]
VIDEO = {"type": "std-text-to-video", "prompt": "a cat on a surfboard", "duration": 5}
TASK_TOOLS = {"generate_video", "extend_video", "lip_sync", "start_story"}
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


async def answer_of(client: Client, task_id: str) -> dict[str, Any]:
    """The tool's answer once the task ended: inlined in 2026-07-28, `tasks/result` in 2025-11-25."""
    ended = await task_ended(client, task_id, timeout=60)
    if client.session.protocol_version == "2026-07-28":
        return ended["result"]  # type: ignore[no-any-return]
    return await ask(client, "tasks/result", {"taskId": task_id})  # type: ignore[no-any-return]


# --- in this process, with the SDK's client -----------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_a_client_that_does_not_ask_gets_todays_answer(sandbox, tmp_path, mode):
    async with connect(sandbox, tmp_path, mode=mode) as client:
        made = await client.call_tool("generate_video", {**VIDEO, "wait_seconds": 0})
        listed = await ask(client, "tools/list")
        if mode == "legacy":
            assert client.session.server_capabilities.tasks is not None  # advertised, and unused here
            supported = {tool["name"] for tool in listed["tools"] if tool.get("execution")}
            assert supported == TASK_TOOLS
            assert {tool["execution"]["taskSupport"] for tool in listed["tools"] if tool.get("execution")} == {
                "optional"
            }
        else:
            assert all("execution" not in tool for tool in listed["tools"])
    assert not made.is_error and made.structured_content["status"] == "running"
    assert "resultType" not in made.structured_content and "taskId" not in made.structured_content
    store = await open_store(f"sqlite:///{tmp_path / 'mcp.db'}")
    try:
        assert await store.mcp_tasks(LOCAL_OWNER, limit=10) == []  # no handle minted for a call that did not ask
    finally:
        await store.close()


@pytest.mark.parametrize("mode", ERAS)
async def test_a_task_follows_its_video_to_the_result(sandbox, tmp_path, mode):
    set_options(sandbox, finish_seconds=1.0)
    async with connect(sandbox, tmp_path, mode=mode) as client:
        created = await start_task(client, VIDEO)
        assert created["status"] == "working" and created["pollInterval" if mode == "legacy" else "pollIntervalMs"]
        video_task = created["statusMessage"].rsplit(" ", 1)[-1]
        assert (await ask(client, "tasks/get", {"taskId": created["taskId"]}))["status"] == "working"
        ended = await task_ended(client, created["taskId"])
        if mode == "legacy":
            result = await ask(client, "tasks/result", {"taskId": created["taskId"]})
            assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": created["taskId"]}
            assert "result" not in ended
        else:
            result = ended["result"]
            assert ended["status"] == "completed" and result["resultType"] == "complete"
    assert result["isError"] is False
    assert result["structuredContent"]["task_id"] == video_task
    assert result["structuredContent"]["video_urls"][0].endswith(".mp4")
    assert json.loads(result["content"][0]["text"])["status"] == "succeeded"
    assert ended["ttl" if mode == "legacy" else "ttlMs"] is None  # the store keeps everything by default


async def test_tasks_result_waits_for_the_end(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    async with connect(sandbox, tmp_path, mode="legacy") as client:
        created = await start_task(client, VIDEO)
        result = await ask(client, "tasks/result", {"taskId": created["taskId"]})  # blocks until it ended
    assert result["structuredContent"]["status"] == "succeeded"


@pytest.mark.parametrize("mode", ERAS)
async def test_a_story_runs_as_a_task(sandbox, tmp_path, mode):
    story = {"type": "std-text-to-video", "duration": 5, "shots": [{"id": "a", "prompt": "one"}]}
    async with connect(sandbox, tmp_path, mode=mode) as client:
        created = await start_task(client, {"story": story}, tool="start_story")
        assert created["status"] == "working" and "story" in created["statusMessage"]
        result = await answer_of(client, created["taskId"])
    assert result["isError"] is False, result
    assert result["structuredContent"]["state"] == "succeeded"


@pytest.mark.parametrize("mode", ERAS)
async def test_a_refused_call_is_answered_and_spends_nothing(sandbox, tmp_path, mode):
    env = server_env(sandbox, tmp_path, KLING_MCP__MAX_CREDITS_PER_VIDEO="10")
    async with connect(sandbox, tmp_path, env, mode=mode) as client:
        answer = await start_task(client, VIDEO)
        if mode == "legacy":  # that era's client expects a task: one that failed, saying why
            assert answer["status"] == "failed" and "pollInterval" not in answer
            assert "max_credits_per_video" in answer["statusMessage"] and "\n" not in answer["statusMessage"]
            answer = await ask(client, "tasks/result", {"taskId": answer["taskId"]})
        else:  # the server decides: the refusal, at once
            assert "taskId" not in answer
    assert answer["isError"] is True and "Nothing was spent" in answer["content"][0]["text"]
    assert stats(sandbox)["requests"].get("generate", 0) == 0


@pytest.mark.parametrize("mode", ERAS)
async def test_cancel_ends_the_handle_while_the_video_goes_on(sandbox, tmp_path, mode):
    set_options(sandbox, finish_seconds=0.8)
    heard = TaskNotifications()
    async with connect(sandbox, tmp_path, mode=mode, extensions=[heard]) as client:
        created = await start_task(client, VIDEO)
        video_task = created["statusMessage"].rsplit(" ", 1)[-1]
        cancelled = await ask(client, "tasks/cancel", {"taskId": created["taskId"]})
        task = await ask(client, "tasks/get", {"taskId": created["taskId"]})
        assert task["status"] == "cancelled" and video_task in task["statusMessage"]
        assert "credits are spent" in task["statusMessage"]
        if mode == "legacy":
            assert cancelled["status"] == "cancelled"
            with pytest.raises(MCPError) as again:  # that era refuses to cancel a task that ended
                await ask(client, "tasks/cancel", {"taskId": created["taskId"]})
            assert again.value.error.code == -32602
            await eventually(lambda: "cancelled" in heard.statuses(created["taskId"]), timeout=10)
        else:  # an empty ack, again once it ended
            for ack in [cancelled, await ask(client, "tasks/cancel", {"taskId": created["taskId"]})]:
                assert ack["resultType"] == "complete" and set(ack) <= {"resultType", "_meta"}

        async def video_succeeded() -> bool:
            listed = await client.call_tool("list_videos", {})
            return any(
                v["task_id"] == video_task and v["status"] == "succeeded" for v in listed.structured_content["videos"]
            )

        await eventually(video_succeeded)  # followed to its end, and listed
    assert (await ask_after(sandbox, tmp_path, mode, created["taskId"]))["status"] == "cancelled"


async def ask_after(sandbox, tmp_path, mode: str, task_id: str) -> dict[str, Any]:
    """The task as a new connection (a new server on the same store) reads it."""
    async with connect(sandbox, tmp_path, mode=mode) as client:
        return await ask(client, "tasks/get", {"taskId": task_id})  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", ERAS)
async def test_unknown_and_hostile_ids_are_unknown_tasks(sandbox, tmp_path, mode):
    hostile = ["nope", "../../etc/passwd", "<script>alert(1)</script>", "x" * 100_000, "' OR 1=1 --", ""]
    async with connect(sandbox, tmp_path, mode=mode) as client:
        for task_id in hostile:
            for method in ["tasks/get", "tasks/cancel", *(["tasks/result"] if mode == "legacy" else [])]:
                with pytest.raises(MCPError) as refused:
                    await ask(client, method, {"taskId": task_id})
                assert refused.value.error.code == -32602
                assert len(refused.value.error.message) < 200
        with pytest.raises(MCPError) as missing:
            await ask(client, "tasks/get", {})
        assert missing.value.error.code == -32602
        if mode == "legacy":
            for cursor in ["not base64!", "WzEsMiwzXQ==", "e30="]:
                with pytest.raises(MCPError) as bad_cursor:
                    await ask(client, "tasks/list", {"cursor": cursor})
                assert bad_cursor.value.error.code == -32602


async def test_the_2026_task_methods_need_the_extension_and_drop_the_2025_ones(sandbox, tmp_path):
    async with connect(sandbox, tmp_path, mode="2026-07-28") as client:
        for method in ["tasks/get", "tasks/cancel", "tasks/update"]:
            with pytest.raises(MCPError) as undeclared:
                await ask(client, method, {"taskId": "x", "inputResponses": {}}, declared=False)
            assert undeclared.value.error.code == -32021
            assert undeclared.value.error.data["requiredCapabilities"]["extensions"] == {TASKS: {}}
        for method in ["tasks/result", "tasks/list"]:
            with pytest.raises(MCPError) as removed:
                await ask(client, method, {"taskId": "x"})
            assert removed.value.error.code == -32601
        call = {"name": "generate_video", "arguments": {**VIDEO, "wait_seconds": 0}}
        without = await ask(client, "tools/call", call, declared=False)
        assert "taskId" not in without and without["structuredContent"]["task_id"]  # answered as before
        created = await start_task(client, VIDEO)
        ack = await ask(client, "tasks/update", {"taskId": created["taskId"], "inputResponses": {"k": {}}})
        assert ack["resultType"] == "complete" and set(ack) <= {"resultType", "_meta"}


async def test_ten_task_calls_at_once_never_beat_the_budget(sandbox, tmp_path):
    set_options(sandbox, generate_delay=0.2, finish_seconds=60)
    env = server_env(sandbox, tmp_path, KLING_MCP__DAILY_CREDIT_BUDGET="1000")
    arguments = {"type": "pro-text-to-video", "prompt": "x"}  # 400 credits: two fit in 1000
    async with connect(sandbox, tmp_path, env, mode="legacy") as client:
        created = await asyncio.gather(*(start_task(client, arguments) for _ in range(10)))
        results = [
            await ask(client, "tasks/result", {"taskId": t["taskId"]}) for t in created if t["status"] != "working"
        ]
    assert sum(t["status"] == "working" for t in created) == 2
    assert len(results) == 8 and all(r["isError"] and "Nothing was spent" in r["content"][0]["text"] for r in results)
    assert stats(sandbox)["requests"]["generate"] == 2


@pytest.mark.parametrize("mode", ERAS)
async def test_status_notifications_reach_the_client_that_listens(sandbox, tmp_path, mode):
    set_options(sandbox, finish_seconds=1.0)
    heard = TaskNotifications()
    async with connect(sandbox, tmp_path, mode=mode, extensions=[heard]) as client:
        created = await start_task(client, VIDEO)
        if mode == "legacy":  # the session that started it is told
            await eventually(lambda: "completed" in heard.statuses(created["taskId"]), timeout=20)
        else:  # a listen stream that names it carries it
            listening = asyncio.create_task(
                client.session._dispatcher.send_raw_request(
                    "subscriptions/listen",
                    {"notifications": {"taskIds": [created["taskId"]]}, "_meta": MODERN_META},
                    None,
                )
            )
            await eventually(lambda: "completed" in heard.statuses(created["taskId"]), timeout=20)
            listening.cancel()
    final = next(task for task in heard.heard if task["status"] == "completed")
    if mode != "legacy":
        assert final["result"]["structuredContent"]["status"] == "succeeded"
        assert final["_meta"]["io.modelcontextprotocol/subscriptionId"] is not None


async def test_a_listen_stream_on_an_unknown_task_is_refused(sandbox, tmp_path):
    async with connect(sandbox, tmp_path, mode="2026-07-28") as client:
        for task_ids in [["nope"], "not-a-list", [1, 2]]:
            with pytest.raises(MCPError) as refused:
                await ask(client, "subscriptions/listen", {"notifications": {"taskIds": task_ids}})
            assert refused.value.error.code == -32602


# --- the store ------------------------------------------------------------------------------------


async def test_sqlite_keeps_task_handles(tmp_path):
    await handles_kept(f"sqlite:///{tmp_path / 'h.db'}")


@pytest.mark.postgres
async def test_postgres_keeps_task_handles(postgres_url):
    await handles_kept(postgres_url)


async def handles_kept(url: str) -> None:
    store = await open_store(url)
    try:
        handles = [McpTaskHandle(owner="alice", tool="generate_video", task_id=f"t{i}", created_at=i) for i in range(5)]
        for handle in handles:
            await store.add_mcp_task(handle)
        await store.add_mcp_task(McpTaskHandle(owner="bob'; DROP TABLE mcp_tasks; --", tool="x", result={"a": [1]}))
        assert await store.get_mcp_task(handles[0].mcp_task_id, owner="bob") is None  # another owner's: unknown
        assert (await store.get_mcp_task(handles[0].mcp_task_id, owner="alice")) == handles[0]
        first = await store.mcp_tasks("alice", limit=2)
        rest = await store.mcp_tasks("alice", before=(first[-1].created_at, first[-1].mcp_task_id), limit=10)
        assert [h.task_id for h in first + rest] == ["t4", "t3", "t2", "t1", "t0"]
        assert await store.cancel_mcp_task(handles[1].mcp_task_id, 99.0)
        assert not await store.cancel_mcp_task(handles[1].mcp_task_id, 100.0)  # once
        assert (await store.get_mcp_task(handles[1].mcp_task_id, owner="alice")).cancelled_at == 99.0  # type: ignore[union-attr]
        kept = await store.mcp_tasks("bob'; DROP TABLE mcp_tasks; --", limit=1)
        assert kept[0].result == {"a": [1]}
        await store.prune(before=50.0)  # none of their tasks is kept: the old handles go, the new one stays
        assert await store.mcp_tasks("alice", limit=10) == []
        assert len(await store.mcp_tasks("bob'; DROP TABLE mcp_tasks; --", limit=1)) == 1
    finally:
        await store.close()


# --- the official tasks client, over stdio and HTTP --------------------------------------------------


@pytest.fixture(scope="session")
def tasks_client() -> list[str]:
    if shutil.which("npm") is None and not os.environ.get("KLING3_REQUIRE_CONFORMANCE"):
        pytest.skip("npm is not available: the official tasks client cannot be installed")
    return installed()


@pytest.fixture(scope="session")
def tasks_conformance() -> Path:
    return conformance_suite(TASKS_CONFORMANCE)


def stdio_args() -> list[str]:
    return ["--cmd", sys.executable, "--arg", "-m", "--arg", "kling3_tools.mcp"]


@pytest.mark.process
@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_the_official_tasks_client_creates_polls_lists_and_cancels(sandbox, tmp_path, tasks_client, era, transport):
    set_options(sandbox, finish_seconds=1.0)
    env = server_env(sandbox, tmp_path, KLING_MCP__HTTP_TOKEN="alice-token")
    arguments = ["--do", "full", "--args", json.dumps(VIDEO), "--cancel-args", json.dumps({**VIDEO, "prompt": "c"})]
    if transport == "http":
        with http_server(env) as url:
            lines = drive(tasks_client, era, "--url", url, "--token", "alice-token", *arguments)
    else:
        lines = drive(tasks_client, era, *stdio_args(), *arguments, env=env)
    steps = {line["step"]: line for line in lines}
    assert steps["done"]["failures"] == 0, lines
    settled = steps["create_and_settle"]
    assert settled["outcome"]["status"] == "completed"
    assert settled["outcome"]["result"]["structuredContent"]["video_urls"][0].endswith(".mp4")
    assert settled["updates"][0]["status"] == "working"
    assert steps["result"]["outcome"]["result"]["structuredContent"]["status"] == "succeeded"
    if era == "2025-11-25":
        assert settled["taskId"] in [task["taskId"] for task in steps["list"]["tasks"]]
    cancelled = steps["cancel"]
    assert cancelled["outcome"]["status"] == "cancelled" and cancelled["after"]["status"] == "cancelled"
    assert "goes on" in cancelled["after"]["statusMessage"]
    assert steps["unknown"]["code"] == -32602
    assert stats(sandbox)["requests"]["generate"] == 2  # each task's video, once


@pytest.mark.process
@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
def test_another_owners_task_is_unknown(sandbox, tmp_path, tasks_client, era):
    set_options(sandbox, finish_seconds=30)
    env = server_env(sandbox, tmp_path, KLING_MCP__HTTP_TOKENS='["alice-token", "bob-token"]')
    with http_server(env) as url:
        alice = ["--url", url, "--token", "alice-token"]
        task_id = drive(tasks_client, era, *alice, "--do", "create", "--args", json.dumps(VIDEO))[0 + 1]["taskId"]
        for action in ["get", "cancel"]:
            bob = drive(tasks_client, era, "--url", url, "--token", "bob-token", "--do", action, "--task", task_id)
            assert bob[1]["ok"] is False and bob[1]["error"]["code"] == -32602, bob
        assert drive(tasks_client, era, *alice, "--do", "get", "--task", task_id)[1]["task"]["status"] == "working"
        if era == "2025-11-25":  # each lists only their own
            bobs = drive(tasks_client, era, "--url", url, "--token", "bob-token", "--do", "list")[1]["tasks"]
            alices = drive(tasks_client, era, *alice, "--do", "list")[1]["tasks"]
            assert bobs == [] and [task["taskId"] for task in alices] == [task_id]


@pytest.mark.process
@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
def test_a_task_survives_a_killed_server(sandbox, tmp_path, tasks_client, era):
    set_options(sandbox, finish_seconds=4)
    env = server_env(sandbox, tmp_path, KLING_MCP__HTTP_TOKEN="alice-token")
    port, started = free_port(), []
    with http_server(env, started, port=port) as url:
        created = drive(
            tasks_client, era, "--url", url, "--token", "alice-token", "--do", "create", "--args", json.dumps(VIDEO)
        )
        task_id = created[1]["taskId"]
        os.kill(started[0].pid, signal.SIGKILL)  # mid-task: nothing closes, nothing is flushed
        started[0].wait(timeout=10)
    with http_server(env, port=port) as url:  # a new server on the same store
        resumed = drive(tasks_client, era, "--url", url, "--token", "alice-token", "--do", "resume", "--task", task_id)
    outcome = resumed[1]["outcome"]
    assert outcome["status"] == "completed", resumed
    assert outcome["result"]["structuredContent"]["video_urls"][0].endswith(".mp4")
    assert stats(sandbox)["requests"]["generate"] == 1


# --- the official conformance suite's tasks scenarios ------------------------------------------------

# The checks that apply to this server: the scenarios' others call the suite's own fixture tools (`greet`,
# `slow_compute`, `failing_job`, `confirm_delete`, ...), which a video server does not have.
APPLICABLE_CHECKS = {
    "tasks-capability-negotiation": {"tasks-extension-advertised", "sep-2663-tasks-methods-non-declaring"},
    "tasks-dispatch-and-envelope": {
        "sep-2663-tasks-result-removed-method-not-found",
        "tasks-removed-tasks-list",
        "sep-2663-legacy-task-param-ignored",
        "sep-2663-tasks-get-invalid-task-id-32602",
    },
    "tasks-request-headers": {"tasks-headers-reject-mismatched-method"},
}


@pytest.mark.process
def test_the_conformance_suite_passes_the_tasks_checks_that_apply(sandbox, tmp_path, tasks_conformance):
    env = {**os.environ, "PATH": f"{tasks_conformance.parent}{os.pathsep}{os.environ['PATH']}"}
    failed: dict[str, Any] = {}
    with http_server(server_env(sandbox, tmp_path)) as url:
        for scenario, applicable in APPLICABLE_CHECKS.items():
            output = tmp_path / scenario
            command = [str(tasks_conformance), "server", "--url", url, "--scenario", scenario, "-o", str(output)]
            subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            checks = {c["id"]: c for f in output.rglob("checks.json") for c in json.loads(f.read_text())}
            wanted = applicable | {"wire-schema-valid"}
            failed |= {
                f"{scenario}/{i}": checks.get(i, {}).get("status")
                for i in wanted
                if checks.get(i, {}).get("status") != "SUCCESS"
            }
    assert failed == {}


@pytest.mark.process
async def test_a_mismatched_routing_header_on_a_task_method_is_refused(sandbox, tmp_path):
    with http_server(server_env(sandbox, tmp_path)) as url:
        async with httpx.AsyncClient(timeout=30) as http:

            async def post(method: str, params: dict[str, Any], name: str) -> dict[str, Any]:
                headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method, "Mcp-Name": name}
                body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": MODERN_META}}
                answer = await http.post(
                    url, json=body, headers={**headers, "Accept": "application/json, text/event-stream"}
                )
                return answer.json()  # type: ignore[no-any-return]

            created = (await post("tools/call", {"name": "generate_video", "arguments": VIDEO}, "generate_video"))[
                "result"
            ]
            mismatched = await post("tasks/get", {"taskId": created["taskId"]}, "someone-elses-task")
            matched = await post("tasks/get", {"taskId": created["taskId"]}, created["taskId"])
    assert mismatched["error"]["code"] == -32020
    assert matched["result"]["taskId"] == created["taskId"]


async def test_a_2025_task_is_made_only_once_the_user_approved(sandbox, tmp_path):
    env = server_env(sandbox, tmp_path, KLING_MCP__CONFIRM_ABOVE_CREDITS="100")
    for action, approved in [("decline", False), ("accept", True)]:
        answer, asked = elicitation(action)
        async with connect(sandbox, tmp_path, env, mode="legacy", elicitation_callback=answer) as client:
            created = await start_task(client, VIDEO)  # asked within the call, before any task exists
            result = await ask(client, "tasks/result", {"taskId": created["taskId"]})
        assert asked and ("300 credits" in asked[0])
        assert result["isError"] is not approved, result
    assert stats(sandbox)["requests"]["generate"] == 1


async def test_a_2026_task_is_made_only_once_the_input_request_is_answered(sandbox, tmp_path):
    env = server_env(sandbox, tmp_path, KLING_MCP__CONFIRM_ABOVE_CREDITS="100")
    async with connect(sandbox, tmp_path, env, mode="2026-07-28") as client:
        call = {"name": "generate_video", "arguments": VIDEO}
        first = await ask(client, "tools/call", call, elicitation={})
        assert first["resultType"] == "input_required" and "taskId" not in first
        assert stats(sandbox)["requests"].get("generate", 0) == 0
        (key, request), *_ = first["inputRequests"].items()
        assert request["method"] == "elicitation/create"
        answers = {"inputResponses": {key: {"action": "accept", "content": {"approve": True}}}}
        state = {"requestState": first["requestState"]} if "requestState" in first else {}
        created = await ask(client, "tools/call", call | answers | state, elicitation={})
    assert created["resultType"] == "task" and created["status"] == "working"
    assert stats(sandbox)["requests"]["generate"] == 1


@pytest.mark.parametrize("mode", ERAS)
async def test_a_video_that_failed_is_said_by_each_eras_rules(sandbox, tmp_path, mode):
    """2025-11-25: a tool's error answer makes the task `failed`, saying why; 2026-07-28 (SEP-2663): `completed`
    with the answer, `isError`. Either way the answer itself is the tool's."""
    set_options(sandbox, failure_rate=1.0)
    async with connect(sandbox, tmp_path, mode=mode) as client:
        created = await start_task(client, VIDEO)
        ended = await task_ended(client, created["taskId"])
        if mode == "legacy":
            assert ended["status"] == "failed" and "failed" in ended["statusMessage"], ended
            result = await ask(client, "tasks/result", {"taskId": created["taskId"]})
        else:
            assert ended["status"] == "completed"
            result = ended["result"]
    assert result["isError"] is True and result["structuredContent"]["status"] == "failed"


@pytest.mark.parametrize("mode", ERAS)
async def test_a_store_that_fails_after_the_submit_still_names_the_video(sandbox, tmp_path, monkeypatch, mode):
    """The store refuses the handle (as a locked SQLite file does: not one of our errors) once the video was
    submitted: the answer names the video task, which is listed and followed, and says not to start it again."""
    from kling3_tools.adapters.store.sqlite import SQLiteTaskStore

    async def locked(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    async with connect(sandbox, tmp_path, mode=mode) as client:
        monkeypatch.setattr(SQLiteTaskStore, "add_mcp_task", locked)
        try:
            said = error_text(await start_task(client, VIDEO))
        except MCPError as exc:  # 2025-11-25, with no task to hold the answer: the answer as the error
            said = exc.error.message
        listed = await client.call_tool("list_videos", {})
    video_task = listed.structured_content["videos"][0]["task_id"]
    assert f"video task {video_task} started" in said and "do not start it again" in said, said
    assert stats(sandbox)["requests"]["generate"] == 1


async def test_waiting_for_results_never_asks_the_api(sandbox, tmp_path):
    """Many `tasks/result` waits (abandoned ones too) read the store the pollers keep: the API sees the pollers'
    checks only, within their rate limit."""
    set_options(sandbox, finish_seconds=60)
    poller = {  # expects the video in a minute, so it will not look for a while; a person waiting would ask
        "KLING_POLLER__EXPECTED_SECONDS": "[60, 120]",
        "KLING_POLLER__DENSE_INTERVAL_SECONDS": "0.2",
        "KLING_POLLER__MAX_INTERVAL_SECONDS": "30",
    }
    async with connect(sandbox, tmp_path, server_env(sandbox, tmp_path, **poller), mode="legacy") as client:
        created = await start_task(client, VIDEO)
        before = stats(sandbox)["requests"].get("status", 0)
        waits = [asyncio.create_task(ask(client, "tasks/result", {"taskId": created["taskId"]})) for _ in range(20)]
        await asyncio.sleep(1.5)
        asked = stats(sandbox)["requests"].get("status", 0) - before
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    assert asked <= 2, asked  # the poller's own, not one per waiter


@pytest.mark.parametrize("mode", ERAS)
async def test_status_notifications_outlive_a_store_error(sandbox, tmp_path, monkeypatch, mode):
    """The store fails once as the video ends (the last change there is): the status is read again a little later
    and told, on a 2025-11-25 session and on a 2026-07-28 listen stream alike."""
    from kling3_tools.adapters.store.sqlite import SQLiteTaskStore

    set_options(sandbox, finish_seconds=1.0)
    heard = TaskNotifications()
    real, failures = SQLiteTaskStore.get_mcp_task, [StoreError("the store restarted")]

    async def down_once_it_ended(self: Any, *args: Any, **kwargs: Any) -> Any:
        handle = await real(self, *args, **kwargs)
        record = handle and await self.get(handle.task_id or "")
        if failures and record is not None and not record.is_tracking:
            raise failures.pop()
        return handle

    async with connect(sandbox, tmp_path, mode=mode, extensions=[heard]) as client:
        created = await start_task(client, VIDEO)
        monkeypatch.setattr(SQLiteTaskStore, "get_mcp_task", down_once_it_ended)
        if mode != "legacy":
            listen = {"notifications": {"taskIds": [created["taskId"]]}, "_meta": MODERN_META}
            dispatcher = client.session._dispatcher
            listening = asyncio.create_task(dispatcher.send_raw_request("subscriptions/listen", listen, None))
        await eventually(lambda: {"completed", "failed"} & set(heard.statuses(created["taskId"])), timeout=20)
        if mode != "legacy":
            listening.cancel()
    assert failures == []  # the store did fail once


async def test_bad_cursors_and_long_names_get_one_short_line(sandbox, tmp_path):
    deep = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    async with connect(sandbox, tmp_path, mode="legacy") as client:
        with pytest.raises(MCPError) as bad_cursor:
            await ask(client, "tasks/list", {"cursor": deep})
        with pytest.raises(MCPError) as long_name:
            await ask(client, "tools/call", {"name": "<b>\n" * 50_000, "arguments": {}, "task": {}})
        with pytest.raises(MCPError) as split_id:
            await ask(client, "tasks/get", {"taskId": "a\nb\r\nc"})
    assert bad_cursor.value.error.code == -32602 and bad_cursor.value.error.message == "Invalid cursor"
    assert long_name.value.error.code == -32601 and len(long_name.value.error.message) < 200
    for error in [long_name.value.error, split_id.value.error]:
        assert "\n" not in error.message and "\r" not in error.message


async def test_the_answers_of_refused_task_calls_are_kept_only_the_newest(sandbox, tmp_path, monkeypatch):
    from kling3_tools.adapters.store import mcp_tasks

    monkeypatch.setattr(mcp_tasks, "KEPT_ANSWERS", 3)
    env = server_env(sandbox, tmp_path, KLING_MCP__MAX_CREDITS_PER_VIDEO="10")
    async with connect(sandbox, tmp_path, env, mode="legacy") as client:
        refused = [await start_task(client, VIDEO) for _ in range(6)]
        with pytest.raises(MCPError):
            await ask(client, "tasks/get", {"taskId": refused[0]["taskId"]})  # the oldest: gone
        newest = await ask(client, "tasks/get", {"taskId": refused[-1]["taskId"]})
        listed = await ask(client, "tasks/list")
    assert newest["status"] == "failed"
    assert [task["taskId"] for task in listed["tasks"]] == [task["taskId"] for task in refused[:-4:-1]]


def error_text(result: dict[str, Any]) -> str:
    return " ".join(block.get("text", "") for block in result["content"])


@pytest.mark.process
async def test_a_2026_request_cannot_borrow_a_2025_sessions_identity(sandbox, tmp_path):
    """Without tokens, a 2025-11-25 session's tasks are its own: a 2026-07-28 request (which has no session)
    carrying that session's id is anonymous, not that session."""
    with http_server(server_env(sandbox, tmp_path)) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            accept = {"Accept": "application/json, text/event-stream"}
            hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
            opened = await http.post(url, json=rpc("initialize", hello), headers=accept)
            session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
            await http.post(
                url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=accept | session
            )
            call = {"name": "generate_video", "arguments": VIDEO, "task": {}}
            created = answer(await http.post(url, json=rpc("tools/call", call), headers=accept | session))
            task_id = created["result"]["task"]["taskId"]
            borrowed = {"mcp-session-id": session["mcp-session-id"], "MCP-Protocol-Version": "2026-07-28"}
            modern = {"taskId": task_id, "_meta": MODERN_META}
            sent = await http.post(
                url, json=rpc("tasks/get", modern), headers=accept | borrowed | {"Mcp-Method": "tasks/get"}
            )
            own = answer(await http.post(url, json=rpc("tasks/get", {"taskId": task_id}), headers=accept | session))
    assert answer(sent)["error"]["code"] == -32602
    assert own["result"]["taskId"] == task_id


def rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


def answer(response: httpx.Response) -> dict[str, Any]:
    """A JSON-RPC answer sent as JSON or as a server-sent event."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])  # type: ignore[no-any-return]
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", ERAS)
async def test_extend_and_lip_sync_run_as_tasks(sandbox, tmp_path, mode):
    options = sandbox.state.options
    kling = {"KLING_PROVIDER": "kling", "KLING_ACCESS_KEY": options.access_key, "KLING_SECRET_KEY": options.secret_key}
    env = server_env(sandbox, tmp_path, KLING_STORE__KEEP_DAYS="2", **kling)
    async with connect(sandbox, tmp_path, env, mode=mode) as client:
        parent = await start_task(client, {"type": "o3-std-text-to-video", "prompt": "a fox"})
        source = (await answer_of(client, parent["taskId"]))["structuredContent"]["task_id"]
        extended = await start_task(client, {"task_id": source, "prompt": "she leaps"}, tool="extend_video")
        spoken = await start_task(client, {"task_id": source, "text": "Hello"}, tool="lip_sync")
        results = [await answer_of(client, task["taskId"]) for task in (extended, spoken)]
        ended = await ask(client, "tasks/get", {"taskId": extended["taskId"]})
    assert [r["structuredContent"]["source_task"] for r in results] == [source, source]
    assert results[1]["structuredContent"]["type"] == "lip-sync"
    assert ended["ttl" if mode == "legacy" else "ttlMs"] == 2 * 86_400_000  # the store's retention
