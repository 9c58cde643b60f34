"""Hosted MCP: `kling3-mcp` over HTTP as an OAuth 2.1 resource server (`[mcp.auth]`), against a real
authorization server on loopback (node-oidc-provider), with tokens from the real flow (dynamic registration,
authorization code with PKCE, a resource indicator) driven by the `mcp` SDK's OAuth client. Each person owns
their videos; a bad token is a 401 that says nothing useful to whoever sent it, and spends nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from harness.helpers import free_port
from harness.oidc import Person, authorization_server, node_available

from .conftest import stats
from .support import http_server, text

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(not node_available() and not os.environ.get("KLING3_REQUIRE_CONFORMANCE"), reason="no node"),
]


def resource_server(
    sandbox: Any, tmp_path: Path, issuer: str, port: int, mcp: dict[str, str] | None = None, **auth: str
) -> Iterator[str]:
    """`kling3-mcp` over HTTP on `port` as a resource server of `issuer` (`next()` starts it, `close()` stops it)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KLING_")},
        "KLING_API_KEY": sandbox.api_key,
        "KLING_BASE_URL": sandbox.url,
        "KLING_STORE__URL": f"sqlite:///{tmp_path / 'mcp.db'}",
        "KLING_MCP__AUTH__ISSUER": issuer,
        "KLING_MCP__AUTH__RESOURCE": f"http://127.0.0.1:{port}/mcp",
        **{f"KLING_MCP__AUTH__{name.upper()}": value for name, value in auth.items()},
        **{f"KLING_MCP__{name.upper()}": value for name, value in (mcp or {}).items()},
    }
    with http_server(env, port=port) as url:
        yield url


@contextlib.asynccontextmanager
async def signed_in(person: Person, url: str, mode: str | None = None) -> AsyncIterator[Client]:
    """The SDK's client on `url`, signing in as `person` when the server asks."""
    async with httpx2.AsyncClient(auth=person.oauth(url), timeout=30) as http:
        options = {"mode": mode} if mode else {}
        async with Client(streamable_http_client(url, http_client=http), **options) as client:
            yield client


async def call(
    url: str, token: str | None, method: str = "tools/list", params: dict[str, Any] | None = None
) -> httpx.Response:
    """One raw JSON-RPC request over streamable HTTP (stateless enough for a refusal to show)."""
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}
    if token is not None:
        headers["authorization"] = token
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, json=body, headers=headers)


async def initialize(url: str, token: str | None) -> httpx.Response:
    """The first request of a session: what any client sends, and is served when its token holds."""
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    return await call(url, token, "initialize", hello)


def forged(token: str, *, header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None) -> str:
    """`token` with its header or claims changed and its signature kept: what an attacker can make of one."""
    head, body, signature = token.split(".")

    def changed(part: str, update: dict[str, Any] | None) -> str:
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return base64.urlsafe_b64encode(json.dumps(data | (update or {})).encode()).rstrip(b"=").decode()

    return ".".join([changed(head, header), changed(body, claims), signature])


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


async def test_each_person_signs_in_through_the_real_flow_and_owns_their_videos(sandbox, tmp_path, ports):
    here, elsewhere = (f"http://127.0.0.1:{port}/mcp" for port in ports)
    with authorization_server(here, elsewhere) as issuer:
        servers = resource_server(sandbox, tmp_path, issuer, ports[0])
        url = next(servers)
        unknown = await call(url, None)
        assert unknown.status_code == 401
        challenge = unknown.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and "resource_metadata=" in challenge
        async with httpx.AsyncClient() as http:
            metadata = (await http.get(challenge.split('resource_metadata="')[1].rstrip('"'))).json()
        assert metadata["resource"] == url and metadata["authorization_servers"] == [issuer]
        assert metadata["scopes_supported"] == ["kling3:read", "kling3:generate"]

        alice, bob = Person("alice"), Person("bob")
        async with signed_in(alice, url) as client:
            made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "alice's fox"})
            assert not made.is_error, text(made)
            task_id = made.structured_content["task_id"]
            mine = await client.call_tool("list_videos", {})
            assert [v["task_id"] for v in mine.structured_content["videos"]] == [task_id]
        async with signed_in(bob, url) as client:
            theirs = await client.call_tool("get_video_status", {"task_id": task_id})
            assert theirs.is_error and "not one of this client's videos" in text(theirs)
            assert (await client.call_tool("list_videos", {})).structured_content["videos"] == []
            card = await client.call_tool("player_status", {"task_id": task_id})
            assert card.is_error and "alice's fox" not in text(card)
            with pytest.raises(MCPError):
                await client.read_resource(f"kling://tasks/{task_id}")
        async with signed_in(bob, url, mode="2026-07-28") as client:
            with pytest.raises(MCPError):  # following another person's video is refused before a stream opens
                async with client.listen(resource_subscriptions=[f"kling://tasks/{task_id}"]):
                    pass
        assert (alice.sign_ins, bob.sign_ins) == (1, 1)
        token = alice.wallet.tokens.access_token  # type: ignore[union-attr]
        assert (await initialize(url, f"Bearer {token}")).status_code == 200  # the token alone, as any client sends it

        before = stats(sandbox)["requests"].get("generate", 0)
        for bad in [
            None,
            "Bearer",
            "Bearer two words",
            f"Basic {token}",
            f"Bearer {token}x",
            f"Bearer {forged(token, claims={'sub': 'bob'})}",  # a forged subject: the signature no longer holds
            f"Bearer {forged(token, header={'kid': 'made-up'})}",  # an unknown key: fetched again at most every 30 s
            f"Bearer {forged(token, header={'alg': 'none'})}",
            f"Bearer {'a' * 10_000}",
            "Bearer not.a.jwt",
        ]:
            refused = await call(
                url,
                bad,
                "tools/call",
                {"name": "generate_video", "arguments": {"type": "std-text-to-video", "prompt": "x"}},
            )
            assert refused.status_code == 401, (bad and bad[:40], refused.status_code)
            assert token not in refused.text and "Traceback" not in refused.text
        assert stats(sandbox)["requests"].get("generate", 0) == before
        assert (await initialize(url, f"Bearer {token}")).status_code == 200  # everyone else is still served

        other = resource_server(sandbox, tmp_path / "other", issuer, ports[1])
        (tmp_path / "other").mkdir()
        other_url = next(other)
        assert (await initialize(other_url, f"Bearer {token}")).status_code == 401  # issued for another server
        for server in (other, servers):
            server.close()


async def test_a_token_from_another_issuer_or_past_its_time_is_refused(sandbox, tmp_path, ports):
    url = f"http://127.0.0.1:{ports[0]}/mcp"
    with authorization_server(url) as issuer, authorization_server(url, token_seconds=1) as brief:
        servers = resource_server(sandbox, tmp_path, brief, ports[0])
        next(servers)
        dave = Person("dave")
        async with signed_in(dave, url) as client:
            assert len((await client.list_tools()).tools) > 0
        issued = time.monotonic()
        token = f"Bearer {dave.wallet.tokens.access_token}"  # type: ignore[union-attr]
        servers.close()

        servers = resource_server(sandbox, tmp_path, issuer, ports[0])
        next(servers)
        assert (await initialize(url, token)).status_code == 401  # signed by an issuer this server does not trust
        servers.close()

        await asyncio.sleep(max(0.0, issued + 1 + 5 + 1 - time.monotonic()))  # its lifetime, and the leeway for clocks
        servers = resource_server(sandbox, tmp_path, brief, ports[0])
        next(servers)
        assert (await initialize(url, token)).status_code == 401  # expired
        servers.close()


async def test_a_token_without_the_generate_scope_is_403_insufficient_scope(sandbox, tmp_path, ports):
    url = f"http://127.0.0.1:{ports[0]}/mcp"
    with authorization_server(url) as issuer:
        servers = resource_server(sandbox, tmp_path, issuer, ports[0])
        next(servers)
        erin = Person("erin", grants="kling3:read")
        async with signed_in(erin, url) as client:
            assert len((await client.list_tools()).tools) > 0
        token = erin.wallet.tokens.access_token  # type: ignore[union-attr]
        arguments = {"type": "std-text-to-video", "prompt": "x"}
        refused = await call(url, f"Bearer {token}", "tools/call", {"name": "generate_video", "arguments": arguments})
        assert refused.status_code == 403
        challenge = refused.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and 'scope="kling3:generate"' in challenge
        assert stats(sandbox)["requests"].get("generate", 0) == 0
        assert (await initialize(url, f"Bearer {token}")).status_code == 200  # what reads is served
        servers.close()


async def test_each_person_has_their_own_budget_under_a_burst(sandbox, tmp_path, ports):
    """Ten videos at once from one person with a budget for two: two reach the API. Another person, whose own
    limit the config sets lower, gets one of ten, and so does one whose limit an operator set (`kling3 person`);
    a third, with the default, is not held back by any of them."""
    url = f"http://127.0.0.1:{ports[0]}/mcp"
    price = 300  # std-text-to-video, 5 s with sound, in the sandbox's credits
    people = json.dumps({"bob": {"daily_credit_budget_per_user": price}})
    # share_tasks lets everyone see every video; what each person may spend is still theirs alone
    limits = {"daily_credit_budget_per_user": str(2 * price), "people": people, "share_tasks": "true"}
    with authorization_server(url) as issuer:
        servers = resource_server(sandbox, tmp_path, issuer, ports[0], mcp=limits)
        next(servers)
        operator = {"KLING_STORE__URL": f"sqlite:///{tmp_path / 'mcp.db'}", "KLING_MCP__AUTH__ISSUER": issuer,
                    "KLING_MCP__AUTH__RESOURCE": url, "HOME": str(tmp_path)}  # fmt: skip
        person = [sys.executable, "-m", "kling3_tools", "person", "dave", "--daily-credit-budget-per-user", str(price)]
        set_by_operator = await asyncio.to_thread(
            subprocess.run, person, env={**os.environ, **operator}, capture_output=True, text=True
        )
        assert set_by_operator.returncode == 0, set_by_operator.stderr
        made: dict[str, int] = {}
        for name in ("alice", "bob", "carol", "dave"):
            async with signed_in(Person(name), url) as client:
                arguments = {"type": "std-text-to-video", "prompt": f"{name}'s fox", "wait_seconds": 0}
                if name == "carol":  # one video, under the default budget
                    results = [await client.call_tool("generate_video", arguments)]
                else:
                    results = await asyncio.gather(*(client.call_tool("generate_video", arguments) for _ in range(10)))
                made[name] = sum(not result.is_error for result in results)
                refusals = [text(result) for result in results if result.is_error]
                assert all("daily_credit_budget_per_user" in refusal for refusal in refusals), refusals[:1]
        servers.close()
    assert made == {"alice": 2, "bob": 1, "carol": 1, "dave": 1}
    assert stats(sandbox)["requests"]["generate"] == 5


async def test_the_server_keeps_serving_when_the_issuer_is_down(sandbox, tmp_path, ports):
    """The issuer's keys are kept: a person already signed in goes on; a token naming a key it does not know is
    refused (its keys cannot be fetched again), and nothing else breaks."""
    url = f"http://127.0.0.1:{ports[0]}/mcp"
    with contextlib.ExitStack() as stack:
        issuer = stack.enter_context(authorization_server(url))
        servers = resource_server(sandbox, tmp_path, issuer, ports[0])
        next(servers)
        fay = Person("fay")
        async with signed_in(fay, url) as client:
            assert len((await client.list_tools()).tools) > 0
        token = fay.wallet.tokens.access_token  # type: ignore[union-attr]
        stack.close()  # the authorization server goes away
        assert (await initialize(url, f"Bearer {token}")).status_code == 200
        assert (await initialize(url, f"Bearer {forged(token, header={'kid': 'rotated'})}")).status_code == 401
        assert (await initialize(url, f"Bearer {token}")).status_code == 200
        servers.close()


async def test_an_opaque_token_is_introspected(sandbox, tmp_path, ports):
    url = f"http://127.0.0.1:{ports[0]}/mcp"
    with authorization_server(url, opaque=True) as issuer:
        introspection = {"introspection_url": f"{issuer}/token/introspection", "client_id": "introspector",
                         "client_secret": "introspector-secret"}  # fmt: skip
        servers = resource_server(sandbox, tmp_path, issuer, ports[0], **introspection)
        next(servers)
        gil = Person("gil")
        async with signed_in(gil, url) as client:
            made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "gil's fox"})
            assert not made.is_error, text(made)
        token = gil.wallet.tokens.access_token  # type: ignore[union-attr]
        assert token.count(".") != 2  # opaque: only its issuer can read it
        assert (await initialize(url, f"Bearer {token}")).status_code == 200
        assert (await initialize(url, f"Bearer {token[:-2]}xx")).status_code == 401
        servers.close()
