"""MCP replicas: several `kling3-mcp` HTTP processes sharing one PostgreSQL store, behind a plain round-robin
proxy, serve any request on any replica; a change a poller makes on one replica reaches a client listening on
another (the store's NOTIFY/LISTEN)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from harness.ext_tasks_client import installed
from harness.proxy import round_robin
from kling3_tools.adapters.sandbox.server import ThreadedServer

from .conftest import set_options
from .support import drive, http_server, text

pytestmark = pytest.mark.process


@contextlib.contextmanager
def replica(store_url: str, api_url: str, api_key: str, **settings: str) -> Iterator[str]:
    """One `kling3-mcp` HTTP replica on the shared store; yields its base URL."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KLING_")},
        "KLING_API_KEY": api_key,
        "KLING_BASE_URL": api_url,
        "KLING_STORE__URL": store_url,
        "KLING_POLLER__RATE_LIMIT_PER_SECOND": "50",
        "KLING_POLLER__EXPECTED_SECONDS": "[0.5, 3]",  # the sandbox's videos take seconds, not minutes
        **settings,
    }
    with http_server(env) as url:
        yield url.removesuffix("/mcp")


def client(url: str) -> Client:
    return Client(streamable_http_client(url + "/mcp"), mode="2026-07-28")


async def test_replicas_behind_round_robin_serve_any_request(sandbox, postgres_url):
    set_options(sandbox, finish_seconds=0.5)
    with replica(postgres_url, sandbox.url, sandbox.api_key) as first, replica(
        postgres_url, sandbox.url, sandbox.api_key
    ) as second:  # fmt: skip
        app, sent_to = round_robin([first, second])
        with ThreadedServer(app) as proxy:
            async with client(proxy.url) as session:
                made = await session.call_tool(
                    "generate_video", {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 0}
                )
                assert not made.is_error, text(made)
                task_id = made.structured_content["task_id"]
                for _ in range(4):  # each on the other replica in turn
                    read = await session.read_resource(f"kling://tasks/{task_id}")
                    assert task_id in read.contents[0].text  # type: ignore[union-attr]
                listed = await session.call_tool("list_videos", {})
                assert [v["task_id"] for v in listed.structured_content["videos"]] == [task_id]
    assert {first, second} <= set(sent_to)


async def test_a_change_made_on_one_replica_reaches_a_listener_on_another(sandbox, postgres_url):
    """Behind a round-robin proxy, a client's listen stream lands on one replica while only the other follows the
    video it listens for (the first names the same sandbox by another spelling, and a poller claims only its own
    API's tasks): the update it hears came through the store."""
    set_options(sandbox, finish_seconds=4.0)  # time for the listener to subscribe, on a loaded machine too
    other_spelling = sandbox.url.replace("127.0.0.1", "localhost")
    with replica(postgres_url, other_spelling, sandbox.api_key) as listening, replica(
        postgres_url, sandbox.url, sandbox.api_key
    ) as following:  # fmt: skip
        app, sent_to = round_robin([listening, following])
        with ThreadedServer(app) as proxy:
            async with client(following) as maker, client(proxy.url) as listener:
                await listener.call_tool("list_video_models", {})  # a core open on the listening replica
                made = await maker.call_tool(
                    "generate_video", {"type": "std-text-to-video", "prompt": "x", "wait_seconds": 0}
                )
                uri = f"kling://tasks/{made.structured_content['task_id']}"
                if sent_to[-1] == listening:
                    await listener.call_tool("list_video_models", {})  # the listen goes to the listening replica
                async with listener.listen(resource_subscriptions=[uri]) as subscription:
                    assert sent_to[-1] == listening
                    event = await asyncio.wait_for(anext(aiter(subscription)), timeout=30)
    assert getattr(event, "uri", None) == uri


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
def test_a_task_is_answered_by_any_replica(sandbox, postgres_url, era):
    """The official tasks client behind the round-robin proxy: a task made through one replica is followed to its
    end through the other (a 2025-11-25 session sticks to the replica it began on, as it must; the next begins
    on the other)."""
    set_options(sandbox, finish_seconds=2.0)
    video = json.dumps({"type": "std-text-to-video", "prompt": "x", "duration": 5})
    token = {"KLING_MCP__HTTP_TOKEN": "alice-token"}
    with replica(postgres_url, sandbox.url, sandbox.api_key, **token) as first, replica(
        postgres_url, sandbox.url, sandbox.api_key, **token
    ) as second:  # fmt: skip
        app, sent_to = round_robin([first, second], sticky=era == "2025-11-25")
        with ThreadedServer(app) as proxy:
            alice = ["--url", proxy.url + "/mcp", "--token", "alice-token"]
            task_id = drive(installed(), era, *alice, "--do", "create", "--args", video)[1]["taskId"]
            made_on = set(sent_to)
            resumed = drive(installed(), era, *alice, "--do", "resume", "--task", task_id)
    assert resumed[1]["outcome"]["result"]["structuredContent"]["status"] == "succeeded", resumed
    assert {first, second} <= set(sent_to)
    if era == "2025-11-25":
        assert len(made_on) == 1 and set(sent_to) - made_on  # resumed in a session on the other replica
