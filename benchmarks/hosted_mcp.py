"""Hosted MCP under load: tool calls per second and p99 latency with many concurrent clients, against one and two
`kling3-mcp` HTTP replicas on one PostgreSQL store, with every request's bearer token checked (`[mcp.auth]`,
tokens from node-oidc-provider on loopback) and without (loopback, no token), side by side, interleaved.

    python -m benchmarks.hosted_mcp [--clients 100] [--seconds 8] [--rounds 2]

Each client sends `estimate_video_cost` (it reads today's spend from the store) as a 2026-07-28 request, one
after another; clients are spread over the replicas in turn, as a load balancer would."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from harness.helpers import free_port
from harness.oidc import Person, authorization_server
from harness.postgres import PostgresCluster, find_bindir
from harness.proxy import round_robin
from kling3_tools.adapters.sandbox.server import ThreadedServer

from .common import SANDBOX_KEY, sandbox_process, server_process

PEOPLE = 10  # the clients sign in as this many people, each on several clients
CALL = {"name": "estimate_video_cost", "arguments": {"type": "std-text-to-video"}}
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
}


@contextlib.contextmanager
def replicas(count: int, store_url: str, api_url: str, auth: dict[str, str]) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        urls = []
        for _ in range(count):
            port = free_port()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("KLING_")},
                "KLING_API_KEY": SANDBOX_KEY,
                "KLING_BASE_URL": api_url,
                "KLING_STORE__URL": store_url,
                **{f"KLING_MCP__AUTH__{k.upper()}": v for k, v in auth.items()},
            }
            command = [sys.executable, "-m", "kling3_tools.mcp", "--transport", "http", "--port", str(port)]
            urls.append(stack.enter_context(server_process(command, port, "/mcp", env)) + "/mcp")
        yield urls


async def load(urls: list[str], tokens: list[str | None], clients: int, seconds: float) -> tuple[float, float]:
    """(calls per second, p99 latency in ms) of `clients` clients calling for `seconds`."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def one(index: int, http: httpx.AsyncClient) -> None:
        url, token = urls[index % len(urls)], tokens[index % len(tokens)]
        headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2026-07-28",
                   "mcp-method": "tools/call", "mcp-name": CALL["name"]}  # fmt: skip
        if token:
            headers["authorization"] = f"Bearer {token}"
        body = {"jsonrpc": "2.0", "id": index, "method": "tools/call", "params": {**CALL, "_meta": META}}
        while time.monotonic() < deadline:
            started = time.perf_counter()
            answer = await http.post(url, json=body, headers=headers)
            if answer.status_code != 200 or '"isError":false' not in answer.text:
                raise SystemExit(f"a call failed: {answer.status_code} {answer.text[:200]}")
            latencies.append(time.perf_counter() - started)

    async def client(index: int) -> None:  # its own connection: one pool shared by 100 slows httpx itself down
        async with httpx.AsyncClient(timeout=60) as http:
            await one(index, http)

    await asyncio.gather(*(client(i) for i in range(clients)))
    ordered = sorted(latencies)
    return len(latencies) / seconds, ordered[int(len(ordered) * 0.99)] * 1000


async def sign_in(url: str) -> list[str]:
    """A token for each person, through the real flow (the SDK's OAuth client, through the replicas' address)."""
    tokens = []
    for n in range(PEOPLE):
        person = Person(f"person{n}")
        async with (
            httpx2.AsyncClient(auth=person.oauth(url), timeout=30) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            await client.list_tools()
        assert person.wallet.tokens is not None
        tokens.append(person.wallet.tokens.access_token)
    return tokens


async def main(clients: int, seconds: float, rounds: int, store_url: str) -> None:
    with sandbox_process() as api_url, contextlib.ExitStack() as stack:
        front = free_port()  # the address the replicas are reached at, as behind a load balancer
        resource = f"http://127.0.0.1:{front}/mcp"
        issuer = stack.enter_context(authorization_server(resource))
        auth = {"issuer": issuer, "resource": resource}
        plain = stack.enter_context(replicas(1, store_url, api_url, {}))
        one = stack.enter_context(replicas(1, store_url, api_url, auth))
        two = stack.enter_context(replicas(2, store_url, api_url, auth))
        app, _ = round_robin([url.removesuffix("/mcp") for url in two])
        stack.enter_context(ThreadedServer(app, port=front))
        tokens: list[str | None] = list(await sign_in(resource))
        runs = {
            "1 replica, no token": (plain, [None]),
            "1 replica, tokens checked": (one, tokens),
            "2 replicas, tokens checked": (two, tokens),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        await load(plain, [None], clients, 2)  # warm every replica's core and the store
        await load(one, tokens, clients, 2)
        await load(two, tokens, clients, 2)
        for _ in range(rounds):
            for name, (urls, keys) in runs.items():
                results[name].append(await load(urls, keys, clients, seconds))
    print(f"{clients} clients, {seconds:g} s per run, {rounds} interleaved rounds, on {os.cpu_count()} cores")
    base = statistics.median(r[0] for r in results["1 replica, no token"])
    base_p99 = statistics.median(r[1] for r in results["1 replica, no token"])
    for name, measured in results.items():
        rate = statistics.median(r[0] for r in measured)
        p99 = statistics.median(r[1] for r in measured)
        print(f"{name:28} {rate:8.0f} calls/s ({rate / base:4.2f}x)   p99 {p99:7.1f} ms ({p99 / base_p99:4.2f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries are needed (see CONTRIBUTING.md)")
    cluster = PostgresCluster(bindir).start()
    try:
        asyncio.run(main(options.clients, options.seconds, options.rounds, cluster.migrated_database()))
    finally:
        cluster.stop()
