"""MCP by the rules of each protocol era (2025-11-25 `resources/subscribe` and `logging/setLevel`, 2026-07-28
`subscriptions/listen`), completions and prompts with per-client isolation, and the official conformance suite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from harness.helpers import eventually

from .conftest import set_options
from .support import Heard, conformance_suite, connect, http_server, legacy_client, server_env

ROOT = Path(__file__).resolve().parents[1]
# The 2025-11-25 methods are deprecated in the client for 2026-07-28; here they are used on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

TASK_TEMPLATE = types.ResourceTemplateReference(type="ref/resource", uri="kling://tasks/{task_id}")
ERAS = ["legacy", "2026-07-28"]
CONFORMANCE = "@modelcontextprotocol/conformance@0.1.16"
GENERAL_SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "logging-set-level",
    "completion-complete",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]


async def generate(client: Client, prompt: str = "x") -> str:
    made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": prompt, "wait_seconds": 0})
    assert not made.is_error, made.content
    return str(made.structured_content["task_id"])


async def wait_until_finished(client: Client, task_id: str) -> None:
    for _ in range(300):
        resource = await client.read_resource(f"kling://tasks/{task_id}")
        if json.loads(resource.contents[0].text)["status"] == "succeeded":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{task_id} did not finish")


async def test_a_2025_session_is_told_of_what_it_subscribed_to_and_its_own_endings(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    heard = Heard()
    async with legacy_client(sandbox, tmp_path, heard) as client:
        capabilities = client.server_capabilities
        assert capabilities.resources is not None and capabilities.resources.subscribe is True
        assert capabilities.logging is not None and capabilities.completions is not None
        watched, unwatched = await generate(client), await generate(client)
        await client.subscribe_resource(f"kling://tasks/{watched}")
        await eventually(lambda: heard.ready(watched) and heard.ready(unwatched), timeout=30)
    assert f"kling://tasks/{watched}" in heard.updates
    assert f"kling://tasks/{unwatched}" not in heard.updates  # no update it did not subscribe to
    assert heard.updates.count(f"kling://tasks/{watched}") >= 1


async def test_an_unsubscribed_uri_is_no_longer_announced(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    heard = Heard()
    async with legacy_client(sandbox, tmp_path, heard) as client:
        task_id = await generate(client)
        uri = f"kling://tasks/{task_id}"
        await client.subscribe_resource(uri)
        await client.unsubscribe_resource(uri)
        await eventually(lambda: heard.ready(task_id), timeout=30)
    assert uri not in heard.updates


async def test_set_level_error_silences_the_info_lines(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    heard = Heard()
    async with legacy_client(sandbox, tmp_path, heard) as client:
        await client.set_logging_level("error")
        task_id = await generate(client)
        await client.subscribe_resource(f"kling://tasks/{task_id}")
        await wait_until_finished(client, task_id)
        await eventually(lambda: f"kling://tasks/{task_id}" in heard.updates, timeout=10)  # it was announced
        await asyncio.sleep(1.0)  # the log line, if any, follows the final update at once
    assert heard.logs == []


async def test_a_2026_session_hears_through_its_listen_stream(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    async with connect(sandbox, tmp_path, mode="2026-07-28") as client:
        task_id = await generate(client)
        uri = f"kling://tasks/{task_id}"
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            event = await asyncio.wait_for(anext(aiter(subscription)), timeout=30)
        assert getattr(event, "uri", None) == uri
        with pytest.raises(MCPError):  # the 2025-11-25 way is not served on this wire
            await client.subscribe_resource(uri)


@contextlib.asynccontextmanager
async def http_client(url: str, mode: str, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


# Two 2026-07-28 clients without a token carry nothing that tells them apart: isolating them takes a token each.
@pytest.mark.process
@pytest.mark.parametrize(
    ("mode", "other_mode", "tokens"),
    [
        ("legacy", "legacy", []),
        ("2026-07-28", "legacy", []),
        ("legacy", "2026-07-28", []),
        ("2026-07-28", "2026-07-28", ["tok-alice", "tok-bob"]),
    ],
)
async def test_completions_and_subscriptions_see_only_the_callers_own_tasks(
    sandbox, tmp_path, mode, other_mode, tokens
):
    set_options(sandbox, finish_seconds=0.5)
    env = server_env(sandbox, tmp_path, **({"KLING_MCP__HTTP_TOKENS": json.dumps(tokens)} if tokens else {}))
    alice_token, bob_token = tokens or (None, None)
    with http_server(env) as url:
        async with http_client(url, mode, alice_token) as alice, http_client(url, other_mode, bob_token) as bob:
            first, second = await generate(alice, "a fox"), await generate(alice, "a cat")
            mine = await alice.complete(TASK_TEMPLATE, {"name": "task_id", "value": ""})
            typed = await alice.complete(TASK_TEMPLATE, {"name": "task_id", "value": second[:-1]})
            theirs = await bob.complete(TASK_TEMPLATE, {"name": "task_id", "value": ""})
            unknown = await bob.complete(
                types.ResourceTemplateReference(type="ref/resource", uri="kling://nothing/{x}"),
                {"name": "x", "value": ""},
            )
            if other_mode == "legacy":
                with pytest.raises(MCPError, match="not one of this client's videos"):
                    await bob.subscribe_resource(f"kling://tasks/{first}")
            else:  # a 2026-07-28 listen stream on another client's task is refused too
                with pytest.raises(MCPError, match="not one of this client's videos"):
                    async with bob.listen(resource_subscriptions=[f"kling://tasks/{first}"]):
                        pass
            if mode == "2026-07-28":
                async with alice.listen(resource_subscriptions=[f"kling://tasks/{first}"]) as own:
                    assert own is not None  # acknowledged: its own task
            await wait_until_finished(alice, first)
            remix = await alice.get_prompt("remix_video", {"task_id": first, "change": "make it snow"})
            with pytest.raises(MCPError, match="not one of this client's videos"):
                await bob.get_prompt("remix_video", {"task_id": first, "change": "make it snow"})
    assert mine.completion.values == [second, first]  # newest first
    assert typed.completion.values == [second]
    assert theirs.completion.values == [] and unknown.completion.values == []
    message = remix.messages[0].content
    assert isinstance(message, types.TextContent) and "make it snow" in message.text and "a fox" in message.text
    assert f"/media/{first}.mp4" in message.text


@pytest.mark.parametrize("mode", ERAS)
async def test_prompts_list_get_and_complete(sandbox, tmp_path, mode):
    async with connect(sandbox, tmp_path, mode=mode) as client:
        prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
        made = await client.get_prompt("make_video", {"subject": "a lighthouse in a storm", "duration": "8"})
        types_ = await client.complete(
            types.PromptReference(type="ref/prompt", name="make_video"), {"name": "type", "value": "o3"}
        )
        ratios = await client.complete(
            types.PromptReference(type="ref/prompt", name="make_video"), {"name": "aspect_ratio", "value": ""}
        )
        with pytest.raises(MCPError, match="duration must be"):
            await client.get_prompt("make_video", {"subject": "x", "duration": "99"})
    assert set(prompts) == {"make_video", "remix_video"}
    assert {a.name for a in prompts["make_video"].arguments or []} >= {"subject", "type", "duration", "aspect_ratio"}
    text = made.messages[0].content
    assert isinstance(text, types.TextContent)
    assert "a lighthouse in a storm" in text.text and "8 seconds" in text.text
    assert text.text.index("estimate_video_cost") < text.text.index("generate_video")
    assert types_.completion.values == ["o3-pro-text-to-video", "o3-std-text-to-video"]
    assert ratios.completion.values == ["16:9", "9:16", "1:1"]


# --- the official conformance suite ----------------------------------------------------------------


@pytest.fixture(scope="session")
def conformance() -> Path:
    return conformance_suite(CONFORMANCE)


@pytest.mark.process
@pytest.mark.parametrize("spec_version", ["2025-11-25", "2025-06-18"])
def test_the_conformance_suite_passes_the_general_server_scenarios(sandbox, tmp_path, conformance, spec_version):
    env = {**os.environ, "PATH": f"{conformance.parent}{os.pathsep}{os.environ['PATH']}"}
    failed = {}
    with http_server(server_env(sandbox, tmp_path)) as url:
        for scenario in GENERAL_SCENARIOS:
            command = [str(conformance), "server", "--url", url, "--scenario", scenario, "--spec-version", spec_version]
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            if result.returncode != 0 or "0 failed" not in result.stdout:
                failed[scenario] = result.stdout[-1500:] + result.stderr[-500:]
    assert failed == {}


def test_the_notifier_forgets_the_oldest_sessions_beyond_its_bound():
    from types import SimpleNamespace

    from mcp.server.subscriptions import InMemorySubscriptionBus

    from kling3_tools.mcp import notifier as module

    notifier = module.McpNotifier(InMemorySubscriptionBus())

    def request(session: str) -> Any:  # what the notifier reads of a 2025-11-25 request over HTTP
        return SimpleNamespace(
            headers={"mcp-session-id": session},
            protocol_version="2025-11-25",
            request_context=SimpleNamespace(session=object()),
        )

    for number in range(module.MAX_SESSIONS + 5):
        notifier.connection(request(f"s{number}"))
    notifier.connection(request("s10"))  # seen again: now the most recent
    kept = list(notifier._sessions)
    assert len(kept) == module.MAX_SESSIONS
    assert "s0" not in kept and kept[-1] == "s10" and f"s{module.MAX_SESSIONS + 4}" in kept
