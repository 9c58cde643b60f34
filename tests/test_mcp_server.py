"""The real MCP server driven by the SDK's real client: in this process over the SDK's in-memory transport, and as a
process over stdio or HTTP where the process itself is what is tested (start-up, signals, transports)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from harness.helpers import eventually, free_port
from kling3_tools.domain import catalog
from kling3_tools.domain.rules import quote

from .conftest import set_options, stats
from .support import TOOL_COUNT, connect, connect_stdio, elicitation, http_server, locked, raw_server, server_env, text


async def test_schemas_carry_enums_bounds_and_annotations(sandbox, tmp_path):
    async with connect(sandbox, tmp_path) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {
        "generate_video",
        "wait_for_video",
        "get_video_status",
        "estimate_video_cost",
        "list_video_models",
        "list_videos",
        "plan_story",
        "start_story",
        "get_story_status",
        "player_status",
        "extend_video",
        "lip_sync",
        "create_character",
        "list_characters",
        "delete_character",
    }
    schema = tools["generate_video"].input_schema
    props, defs = schema["properties"], schema["$defs"]
    assert defs["TaskType"]["enum"] == [t.value for t in catalog.TaskType]
    assert defs["AspectRatio"]["enum"] == ["16:9", "9:16", "1:1"]
    assert schema["required"] == ["type"]  # `prompt` too, for the types that take one (the core says which)
    duration = props["duration"]["anyOf"][0]
    assert (duration["minimum"], duration["maximum"], duration["type"]) == (3, 15, "integer")
    cfg = props["cfg_scale"]["anyOf"][0]
    assert (cfg["minimum"], cfg["maximum"]) == (0, 1)
    assert props["images"]["anyOf"][0]["maxItems"] == 7
    assert props["prompt"]["anyOf"][0]["maxLength"] == 2000
    assert props["wait_seconds"]["anyOf"][0]["maximum"] == 55
    assert "request" not in props and "approval" not in props  # resolved by the server, not the model
    assert tools["generate_video"].annotations.open_world_hint is True
    assert tools["generate_video"].annotations.read_only_hint is False
    for name in ("get_video_status", "estimate_video_cost", "list_video_models", "list_videos", "plan_story"):
        assert tools[name].annotations.read_only_hint is True
    assert tools["generate_video"].output_schema["properties"]["resource_uri"]


async def test_every_tool_and_resource(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.5)
    async with connect(sandbox, tmp_path) as client:
        cost = await client.call_tool("estimate_video_cost", {"type": "o3-pro-text-to-video", "duration": 10})
        assert cost.structured_content["credits"] == 480
        assert stats(sandbox)["tasks"] == 0  # estimating spends nothing

        models = await client.call_tool("list_video_models", {})
        assert len(models.structured_content["models"]) == 12

        made = await client.call_tool(
            "generate_video", {"type": "o3-pro-text-to-video", "prompt": "A fox", "duration": 10, "wait_seconds": 20}
        )
        assert not made.is_error, text(made)
        video = made.structured_content
        assert video["status"] == "succeeded"
        assert video["consumed_credits"] == 480
        assert video["video_urls"][0].endswith(f"{video['task_id']}.mp4")
        assert video["resource_uri"] == f"kling://tasks/{video['task_id']}"

        status = await client.call_tool("get_video_status", {"task_id": video["task_id"]})
        assert status.structured_content["status"] == "succeeded"
        waited = await client.call_tool("wait_for_video", {"task_id": video["task_id"], "timeout_seconds": 5})
        assert waited.structured_content["video_urls"] == video["video_urls"]

        listed = await client.call_tool("list_videos", {"status": "succeeded"})
        assert [v["task_id"] for v in listed.structured_content["videos"]] == [video["task_id"]]

        resource = await client.read_resource(video["resource_uri"])
        assert json.loads(resource.contents[0].text)["status"] == "succeeded"
        models_resource = await client.read_resource("kling://models")
        assert len(json.loads(models_resource.contents[0].text)["models"]) == 12


async def test_progress_notifications_arrive_during_a_wait(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=7)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with connect(sandbox, tmp_path) as client:
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 0})
        assert made.structured_content["status"] == "running"
        assert "wait_for_video" in made.structured_content["next_step"]
        waited = await client.call_tool(
            "wait_for_video",
            {"task_id": made.structured_content["task_id"], "timeout_seconds": 30},
            progress_callback=on_progress,
        )
    assert waited.structured_content["status"] == "succeeded"
    assert len(progress) >= 2
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert "IN_PROGRESS" in (progress[0][2] or "")


async def test_a_short_wait_says_still_running(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=30)
    async with connect(sandbox, tmp_path) as client:
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 1})
    assert made.structured_content["status"] == "running"
    assert made.structured_content["next_step"].startswith("Still running after the wait")


async def test_resource_updated_arrives_when_the_poller_finishes(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.5)
    async with connect(sandbox, tmp_path) as client:
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 0})
        uri = made.structured_content["resource_uri"]
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            event = await asyncio.wait_for(anext(aiter(subscription)), timeout=30)
        assert getattr(event, "uri", None) == uri
        resource = json.loads((await client.read_resource(uri)).contents[0].text)
    assert resource["status"] in {"running", "succeeded"}


async def test_legacy_clients_that_subscribe_get_the_notification_and_a_log_line_with_the_url(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    updates: list[str] = []
    logs: list[Any] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(message.params.uri)

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with connect(sandbox, tmp_path, mode="legacy", message_handler=on_message, logging_callback=on_log) as client:
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 0})
        task_id = made.structured_content["task_id"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated for 2026-07-28 sessions; this one speaks 2025-11-25
            await client.subscribe_resource(made.structured_content["resource_uri"])
        await eventually(lambda: any("ready" in str(entry) for entry in logs), timeout=30)
    assert updates.count(f"kling://tasks/{task_id}") == 1  # the ending is announced once
    [final] = [entry for entry in logs if "ready" in str(entry)]
    assert final["task_id"] == task_id
    assert f"/media/{task_id}.mp4" in final["message"]


# --- spending guard -----------------------------------------------------------------


@pytest.mark.parametrize(("action", "spends"), [("accept", True), ("decline", False), ("cancel", False)])
async def test_confirmation_above_the_threshold(sandbox, tmp_path, action, spends):
    env = server_env(sandbox, tmp_path, KLING_MCP__CONFIRM_ABOVE_CREDITS="300", KLING_MCP__WAIT_SECONDS="0")
    callback, asked = elicitation(action)
    async with connect(sandbox, tmp_path, env, elicitation_callback=callback) as client:
        cheap = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "sound": False})
        assert not cheap.is_error  # 200 credits: under the threshold, nobody is asked
        assert asked == []
        dear = await client.call_tool("generate_video", {"type": "pro-text-to-video", "prompt": "x"})
    assert asked == ["This will spend 400 credits (pro-text-to-video). Continue?"]
    assert dear.is_error is not spends
    assert stats(sandbox)["tasks"] == (2 if spends else 1)
    assert stats(sandbox)["balance"] == 100_000 - 200 - (400 if spends else 0)
    if not spends:
        assert "did not approve spending 400 credits" in text(dear)


@pytest.mark.parametrize(("policy", "spends"), [(None, False), ("allow", True)])
async def test_clients_that_cannot_confirm_follow_the_policy(sandbox, tmp_path, policy, spends):
    extra = {"KLING_MCP__CONFIRM_ABOVE_CREDITS": "300", "KLING_MCP__WAIT_SECONDS": "0"}
    if policy:
        extra["KLING_MCP__WHEN_CANNOT_CONFIRM"] = policy
    async with connect(sandbox, tmp_path, server_env(sandbox, tmp_path, **extra)) as client:
        result = await client.call_tool("generate_video", {"type": "pro-text-to-video", "prompt": "x"})
    assert result.is_error is not spends
    assert stats(sandbox)["tasks"] == (1 if spends else 0)
    if not spends:
        assert "cannot ask the user to confirm" in text(result)
        assert 'when_cannot_confirm = "allow"' in text(result)


async def test_budget_refusals_state_the_numbers_and_spend_nothing(sandbox, tmp_path):
    env = server_env(
        sandbox,
        tmp_path,
        KLING_MCP__MAX_CREDITS_PER_VIDEO="500",
        KLING_MCP__DAILY_CREDIT_BUDGET="700",
        KLING_MCP__WAIT_SECONDS="0",
    )
    async with connect(sandbox, tmp_path, env) as client:
        too_dear = await client.call_tool("generate_video", {"type": "pro-text-to-video", "prompt": "x", "duration": 7})
        assert too_dear.is_error
        assert "560 credits" in text(too_dear) and "limit of 500" in text(too_dear)
        first = await client.call_tool("generate_video", {"type": "pro-text-to-video", "prompt": "x"})
        assert not first.is_error
        second = await client.call_tool("generate_video", {"type": "pro-text-to-video", "prompt": "x"})
        assert second.is_error
        assert "only 300 of the 700-credit budget" in text(second)
        cost = await client.call_tool("estimate_video_cost", {"type": "pro-text-to-video"})
        assert cost.structured_content["left_today"] == 300
    assert stats(sandbox)["tasks"] == 1
    assert stats(sandbox)["balance"] == 100_000 - 400


async def test_numbers_and_booleans_sent_as_strings_are_read_as_the_schema_declares(sandbox, tmp_path):
    """MCP Inspector sends `"10"` for an `anyOf [integer, null]` field; a string field keeps its digits."""
    set_options(sandbox, finish_seconds=0.3)
    async with connect(sandbox, tmp_path) as client:
        cost = await client.call_tool("estimate_video_cost", {"type": "std-text-to-video", "duration": "10"})
        made = await client.call_tool(
            "generate_video",
            {"type": "std-text-to-video", "prompt": "10", "duration": "10", "sound": "false", "wait_seconds": "20"},
        )
        wrong = await client.call_tool("estimate_video_cost", {"type": "std-text-to-video", "duration": "ten"})
    assert cost.structured_content["credits"] == quote("std-text-to-video", 10, None)
    assert not made.is_error, text(made)  # the prompt "10" stayed a string (an int is no prompt)
    assert made.structured_content["status"] == "succeeded"
    assert made.structured_content["estimated_credits"] == quote("std-text-to-video", 10, False)
    assert wrong.is_error and "duration" in text(wrong)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"type": "pro-image-to-video", "prompt": "x"}, "requires `image`"),
        ({"type": "o3-pro-text-to-video", "prompt": "x", "cfg_scale": 0.3}, "`cfg_scale`"),
        ({"type": "pro-text-to-video", "prompt": ""}, "prompt"),
        ({"type": "pro-text-to-video", "prompt": "x", "duration": 40}, "duration"),
        ({"type": "ultra", "prompt": "x"}, "type"),
    ],
)
async def test_bad_input_is_an_error_result_naming_the_field(sandbox, tmp_path, arguments, expected):
    async with connect(sandbox, tmp_path) as client:
        result = await client.call_tool("generate_video", arguments)
        unknown = await client.call_tool("get_video_status", {"task_id": "n75nope"})
    assert result.is_error
    assert expected in text(result)
    assert unknown.is_error and "n75nope" in text(unknown)
    assert stats(sandbox)["tasks"] == 0


# --- streamable HTTP ----------------------------------------------------------------------


@pytest.mark.process
async def test_streamable_http(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.5)
    with http_server(server_env(sandbox, tmp_path)) as url:
        async with Client(url) as client:
            tools = await client.list_tools()
            assert len(tools.tools) == TOOL_COUNT
            made = await client.call_tool(
                "generate_video", {"type": "o3-std-text-to-video", "prompt": "x", "duration": 3, "wait_seconds": 20}
            )
    assert made.structured_content["status"] == "succeeded"
    assert made.structured_content["consumed_credits"] == 108


@pytest.mark.process
async def test_ten_calls_at_once_over_http_never_beat_the_budget(sandbox, tmp_path):
    set_options(sandbox, generate_delay=0.2, finish_seconds=60)
    env = server_env(sandbox, tmp_path, KLING_MCP__DAILY_CREDIT_BUDGET="1000", KLING_MCP__WAIT_SECONDS="0")
    arguments = {"type": "pro-text-to-video", "prompt": "x"}  # 400 credits: two fit in 1000
    with http_server(env) as url:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(url)) for _ in range(10)]
            results = await asyncio.gather(*(c.call_tool("generate_video", arguments) for c in clients))
    refused = [text(r) for r in results if r.is_error]
    assert len(refused) == 8, refused
    assert all("[mcp] daily_credit_budget" in t and "Nothing was spent" in t for t in refused)
    assert stats(sandbox)["requests"]["generate"] == 2


async def test_an_unknown_outcome_says_it_may_have_been_charged(sandbox, tmp_path):
    set_options(sandbox, generate_delay=3)
    env = server_env(sandbox, tmp_path, KLING_TIMEOUT_SECONDS="0.5", KLING_MAX_RETRIES="0")
    async with connect(sandbox, tmp_path, env) as client:
        result = await client.call_tool("generate_video", {"type": "pro-text-to-video", "prompt": "x"})
    assert result.is_error
    assert "may have been created and charged" in text(result) and "kling3 tasks resolve attempt-" in text(result)


async def test_the_servers_poller_outlives_a_store_outage(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    env = server_env(sandbox, tmp_path, KLING_STORE__BUSY_TIMEOUT_SECONDS="0.2", KLING_MCP__WAIT_SECONDS="0")
    async with connect(sandbox, tmp_path, env) as client:
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "duration": 3})
        with locked(tmp_path / "mcp.db"):
            await asyncio.sleep(3)  # the poller's sweeps fail meanwhile
            refused = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "y"})
        done = await client.call_tool("wait_for_video", {"task_id": made.structured_content["task_id"]})
    assert (refused.is_error and "Nothing was sent" in text(refused)) or "no poller is following" in text(refused)
    assert done.structured_content["status"] == "succeeded"  # followed to the end after the outage
    assert stats(sandbox)["requests"]["generate"] == 1


@pytest.mark.process
async def test_http_clients_see_only_their_own_videos(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3)
    env = server_env(sandbox, tmp_path, KLING_MCP__WAIT_SECONDS="0")
    with http_server(env) as url:
        async with contextlib.AsyncExitStack() as stack:
            clients = {}
            for name in ("alice", "bob"):
                http = await stack.enter_async_context(httpx2.AsyncClient(headers={"Authorization": f"Bearer {name}"}))
                clients[name] = await stack.enter_async_context(Client(streamable_http_client(url, http_client=http)))
            made = await clients["alice"].call_tool("generate_video", {"type": "std-text-to-video", "prompt": "secret"})
            task_id = made.structured_content["task_id"]
            alices = await clients["alice"].call_tool("list_videos", {})
            bobs = await clients["bob"].call_tool("list_videos", {})
            peeked = await clients["bob"].call_tool("get_video_status", {"task_id": task_id})
            unknown = await clients["bob"].call_tool("get_video_status", {"task_id": "n75notinthestore"})
            waited = await clients["bob"].call_tool("wait_for_video", {"task_id": task_id, "timeout_seconds": 1})
            with pytest.raises(Exception, match="kling://tasks/") as refused:
                await clients["bob"].read_resource(f"kling://tasks/{task_id}")
            own = await clients["alice"].read_resource(f"kling://tasks/{task_id}")
    assert [v["task_id"] for v in alices.structured_content["videos"]] == [task_id]
    assert bobs.structured_content["videos"] == []
    assert peeked.is_error and waited.is_error and "secret" not in text(peeked) + text(waited)
    assert unknown.is_error and "not one of this client's videos" in text(unknown)  # the API is not asked
    assert json.loads(own.contents[0].text)["task_id"] == task_id
    assert "secret" not in str(refused.value)


async def test_argument_errors_read_like_rule_errors_and_the_schema_explains_itself(sandbox, tmp_path):
    async with connect(sandbox, tmp_path) as client:
        schema_error = await client.call_tool(
            "generate_video", {"type": "pro-text-to-video", "prompt": "x", "duration": 20}
        )
        rule_error = await client.call_tool("generate_video", {"type": "pro-image-to-video", "prompt": "x"})
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for result in (schema_error, rule_error):
        assert result.is_error and text(result).startswith("The request has 1 problem:")
        assert "Nothing was spent." in text(result) and "pydantic" not in text(result)
    assert "`duration`" in text(schema_error) and "15" in text(schema_error)
    generate = tools["generate_video"]
    assert "\n    " not in generate.description and "neither `duration` nor `sound`" in generate.description
    props = generate.input_schema["properties"]
    assert props["negative_prompt"]["description"] and "http(s) URL" in props["image"]["description"]
    assert "data: URI" in props["image"]["description"]
    assert "without `o3-`" in props["cfg_scale"]["description"]
    assert stats(sandbox).get("requests", {}).get("generate", 0) == 0


async def test_wait_for_video_asks_the_api_when_the_poller_will_not_look_soon(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    env = server_env(sandbox, tmp_path, KLING_MCP__WAIT_SECONDS="0", KLING_POLLER__EXPECTED_SECONDS="[600, 1200]")
    async with connect(sandbox, tmp_path, env) as client:  # the poller's first look is 5 minutes away
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "duration": 3})
        started = time.monotonic()
        done = await client.call_tool(
            "wait_for_video", {"task_id": made.structured_content["task_id"], "timeout_seconds": 30}
        )
    assert done.structured_content["status"] == "succeeded" and time.monotonic() - started < 20


@pytest.mark.process
async def test_http_token_is_required_when_set(sandbox, tmp_path):
    with http_server(server_env(sandbox, tmp_path, KLING_MCP__HTTP_TOKEN="tok-123")) as url:
        async with httpx.AsyncClient() as plain:
            refused = await plain.post(url, json={}, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401
        async with (
            httpx2.AsyncClient(headers={"Authorization": "Bearer tok-123"}) as authorised,
            Client(streamable_http_client(url, http_client=authorised)) as client,
        ):
            assert len((await client.list_tools()).tools) == TOOL_COUNT


@pytest.mark.process
def test_listening_beyond_loopback_needs_a_token(sandbox, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kling3_tools.mcp", "--transport", "http", "--host", "0.0.0.0"],
        env=server_env(sandbox, tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "http_token" in result.stderr


@pytest.mark.process
def test_kling3_mcp_subcommand_help():
    result = subprocess.run(
        [sys.executable, "-m", "kling3_tools", "mcp", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "--transport" in result.stdout and "--sandbox" in result.stdout


async def test_a_wrong_key_is_a_readable_error_that_never_shows_the_key(sandbox, tmp_path):
    env = server_env(sandbox, tmp_path, KLING_API_KEY="sk-live-wrong-and-secret")
    async with connect(sandbox, tmp_path, env) as client:
        result = await client.call_tool("generate_video", {"type": "pro-text-to-video", "prompt": "x"})
        status = await client.call_tool("get_video_status", {"task_id": "n75abc"})
    for answer in (result, status):
        assert answer.is_error
        assert "API key is missing or invalid" in text(answer)
        assert "sk-live-wrong-and-secret" not in text(answer)
    assert stats(sandbox)["tasks"] == 0


async def test_the_tools_listed_before_the_core_loads_are_the_tools_it_serves(sandbox, tmp_path):
    """`tools/list` is answered from the manifest until the first request that needs the core; both answers
    are one list, and the manifest is that of this code."""
    from kling3_tools.mcp import manifest
    from kling3_tools.mcp.serve import current_manifest

    async with connect(sandbox, tmp_path) as client:
        before = (await client.list_tools()).tools
        await client.call_tool("estimate_video_cost", {"type": "std-text-to-video", "duration": 5})  # loads the core
        after = (await client.list_tools()).tools
    assert [tool.model_dump() for tool in before] == [tool.model_dump() for tool in after]
    assert len(before) == TOOL_COUNT
    written = (Path(manifest.__file__).parent / manifest.MANIFEST).read_text()
    assert written == await current_manifest(), "the manifest is stale: run `python scripts/write_mcp_manifest.py`"


@pytest.mark.process
async def test_a_core_that_cannot_open_is_a_one_line_error_and_the_next_request_tries_again(sandbox, tmp_path):
    """A store that cannot be opened no longer stops the server before its handshake: each request that needs
    the core says why in one line (nothing spent), and once the store can be opened the next one works."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    env = server_env(sandbox, tmp_path, KLING_STORE__URL=f"sqlite:///{blocker / 'tasks.db'}")
    async with connect_stdio(sandbox, tmp_path, env) as client:
        assert len((await client.list_tools()).tools) == TOOL_COUNT
        with pytest.raises(Exception, match="kling3 could not start: ") as refused:
            await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x"})
        assert "\n" not in str(refused.value) and sandbox.api_key not in str(refused.value)
        blocker.unlink()
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 0})
    assert not made.is_error, text(made)
    assert stats(sandbox)["requests"]["generate"] == 1  # the refused call sent nothing


@contextlib.contextmanager
def silent_postgres() -> Any:
    """A PostgreSQL address that accepts connections and never answers (a store that hangs)."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    try:
        yield f"postgresql://kling@127.0.0.1:{listener.getsockname()[1]}/kling?connect_timeout=30"
    finally:
        listener.close()


@pytest.mark.process
async def test_closing_stdin_while_the_core_opens_on_a_store_that_hangs_ends_at_once(sandbox, tmp_path):
    pytest.importorskip("psycopg")
    with silent_postgres() as store_url:
        server = await raw_server(server_env(sandbox, tmp_path, KLING_STORE__URL=store_url))
        await server.ask("tools/call", {"name": "list_videos", "arguments": {}}, answer=False)  # the core opens
        await asyncio.sleep(0.5)
        assert server.process.stdin is not None
        started = time.monotonic()
        server.process.stdin.close()
        _, stderr = await asyncio.wait_for(server.process.communicate(), 30)
    assert time.monotonic() - started < 5, "the exit waited on the store's 30 s connect timeout"
    assert server.process.returncode == 0 and b"Traceback" not in stderr


@pytest.mark.process
async def test_a_request_the_core_does_not_serve_never_opens_it(sandbox, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a store that cannot open: opening it would be said on stderr")
    server = await raw_server(server_env(sandbox, tmp_path, KLING_STORE__URL=f"sqlite:///{blocker / 't.db'}"))
    unknown = await server.ask("videos/make", {})
    listed = await server.ask("tools/list")
    assert server.process.stdin is not None
    server.process.stdin.close()
    _, stderr = await asyncio.wait_for(server.process.communicate(), 30)
    assert unknown["error"]["code"] == types.METHOD_NOT_FOUND
    assert len(listed["result"]["tools"]) == TOOL_COUNT
    assert b"could not start" not in stderr


UNOPENABLE = ["postgres refusing", "sqlite under a file"]


def unopenable_store(tmp_path: Path, store: str) -> str:
    if store == "postgres refusing":
        pytest.importorskip("psycopg")
        return f"postgresql://kling@127.0.0.1:{free_port()}/kling"  # libpq's message spans lines
    (tmp_path / "not-a-folder").write_text("")
    return f"sqlite:///{tmp_path / 'not-a-folder' / 't.db'}"


@pytest.mark.process
@pytest.mark.parametrize("store", UNOPENABLE)
async def test_a_core_that_cannot_open_is_said_in_one_line(sandbox, tmp_path, store):
    env = server_env(sandbox, tmp_path, KLING_STORE__URL=unopenable_store(tmp_path, store))
    async with connect_stdio(sandbox, tmp_path, env) as client:
        with pytest.raises(Exception, match="kling3 could not start: ") as refused:
            await client.call_tool("list_videos", {})
    assert "\n" not in str(refused.value)


@pytest.mark.process
@pytest.mark.parametrize("store", UNOPENABLE)
def test_over_http_a_core_that_cannot_open_is_exit_1_in_one_line(sandbox, tmp_path, store):
    served = subprocess.run(
        [sys.executable, "-m", "kling3_tools.mcp", "--transport", "http", "--port", str(free_port())],
        env=server_env(sandbox, tmp_path, KLING_STORE__URL=unopenable_store(tmp_path, store)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert served.returncode == 1
    [line] = served.stderr.splitlines()
    assert line.startswith("error: kling3 could not start: ")


@pytest.mark.process
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_ctrl_c_or_sigterm_closes_the_core_and_ends_though_stdin_stays_open(sandbox, tmp_path, signum):
    """The SDK reads stdin in a thread that no signal ends: the server closed its core and then waited forever."""
    server = await raw_server(server_env(sandbox, tmp_path))
    listed = await server.ask("tools/call", {"name": "list_videos", "arguments": {}})  # the core is open
    assert "result" in listed
    server.process.send_signal(signum)
    _, stderr = await asyncio.wait_for(server.process.communicate(), 30)
    assert server.process.returncode == 130
    assert b"Traceback" not in stderr
    assert not (tmp_path / "mcp.db-wal").exists()  # the store was closed, not dropped


@pytest.mark.process
async def test_sigterm_over_http_closes_the_core_before_the_process_ends(sandbox, tmp_path):
    """uvicorn raises the signal again once it has stopped: under Python's own handler that killed the process
    before the core was closed."""
    started: list[subprocess.Popen[bytes]] = []
    with http_server(server_env(sandbox, tmp_path), started) as url:
        async with Client(url) as client:
            await client.call_tool("list_videos", {})
        started[0].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(started[0].wait, 30) == 130
    assert not (tmp_path / "mcp.db-wal").exists()


@pytest.mark.process
async def test_bad_settings_are_said_in_every_answer_that_needs_them_and_a_fixed_file_is_read_again(sandbox, tmp_path):
    """Over stdio the settings are read when the core opens, not before the handshake (which needs none of
    them): a bad one is one line in each answer that needs the core (the chat shows it, not only the host's
    log), nothing is spent, and once the file is fixed the next request works without a restart."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "mysql://kling@db/tasks"\n')
    env = {k: v for k, v in server_env(sandbox, tmp_path, KLING_CONFIG=str(config)).items() if k != "KLING_STORE__URL"}
    async with connect_stdio(sandbox, tmp_path, env) as client:
        assert len((await client.list_tools()).tools) == TOOL_COUNT
        for _ in range(2):
            with pytest.raises(Exception, match=r"kling3 could not start: invalid configuration .*store\.url") as bad:
                await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x"})
            assert "\n" not in str(bad.value) and str(config) in str(bad.value) and "kling@db" not in str(bad.value)
        config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "fixed.db"}"\n')
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 0})
    assert not made.is_error, text(made)
    assert stats(sandbox)["requests"]["generate"] == 1  # the refused calls sent nothing


@pytest.mark.process
async def test_with_no_api_key_the_server_estimates_and_a_generate_says_how_to_give_one(sandbox, tmp_path):
    async with connect_stdio(sandbox, tmp_path, server_env(sandbox, tmp_path, KLING_API_KEY="")) as client:
        assert len((await client.list_tools()).tools) == TOOL_COUNT
        cost = await client.call_tool("estimate_video_cost", {"type": "std-text-to-video", "duration": 5})
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x"})
    assert not cost.is_error and made.is_error
    assert "No API key" in text(made) and "--sandbox" in text(made)
    assert stats(sandbox)["requests"].get("generate", 0) == 0


@pytest.mark.process
def test_bad_settings_end_the_http_server_before_it_listens(sandbox, tmp_path):
    """Over HTTP the settings are read first: nothing listens on a configuration that cannot serve."""
    bad_store = subprocess.run(
        [sys.executable, "-m", "kling3_tools.mcp", "--transport", "http", "--port", str(free_port())],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env=server_env(sandbox, tmp_path, KLING_STORE__URL="mysql://kling@db/tasks"),
    )  # fmt: skip
    assert bad_store.returncode == 2 and bad_store.stderr.count("\n") == 1 and "store.url" in bad_store.stderr
    assert "kling@db" not in bad_store.stderr


@pytest.mark.process
async def test_a_second_sigterm_while_the_core_closes_over_http_ends_it_at_once(sandbox, tmp_path):
    """The poller gives a status check in flight `stop_grace_seconds` (10) to finish; a second SIGTERM does not
    wait for it (over HTTP it met Python's own handler: exit 143)."""
    from kling3_tools.config import Settings
    from kling3_tools.domain.models import GenerateRequest
    from kling3_tools.domain.records import McpOrigin, TaskRecord
    from kling3_tools.service import KlingService

    env = server_env(sandbox, tmp_path)
    set_options(sandbox, status_delay=30)
    request = GenerateRequest.build(type="std-text-to-video", prompt="x")
    settings = Settings.load(api_key=sandbox.api_key, base_url=sandbox.url, store={"url": env["KLING_STORE__URL"]})
    async with KlingService.open(settings) as service:  # an MCP task, due now
        task = await service.client.generate(request)
        record = TaskRecord.submitted(task, request, api_url=service.base_url, origin=McpOrigin(session="gone"))
        record.due_at = record.submitted_at
        await service.store.add(record)
    started: list[subprocess.Popen[bytes]] = []
    with http_server(env, started):
        await eventually(lambda: stats(sandbox)["requests"].get("status", 0) >= 1, timeout=30)  # one in flight
        started[0].send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        started[0].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(started[0].wait, 5) == 130
