"""A plain round-robin HTTP proxy on loopback, as a load balancer without sticky sessions would be: each request
to the next upstream in turn, its answer streamed back as it comes (a listen stream included)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


def round_robin(upstreams: list[str], *, sticky: bool = False) -> tuple[Starlette, list[str]]:
    """The proxy app, and the upstream each request went to, in order (for tests to see the turns); `sticky`: a
    request of a 2025-11-25 MCP session goes where the session began, as a balancer's session affinity does."""
    turns = itertools.cycle(upstreams)
    sent_to: list[str] = []
    sessions: dict[str, str] = {}

    async def forward(request: Request) -> Response:
        session = request.headers.get("mcp-session-id", "")
        upstream = sessions.get(session) if sticky else None
        upstream = upstream or next(turns)
        sent_to.append(upstream)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        http = httpx.AsyncClient(timeout=httpx.Timeout(60, read=None))  # one per request, closed with its answer
        outgoing = http.build_request(
            request.method, upstream + request.url.path, params=request.query_params, headers=headers,
            content=await request.body(),
        )  # fmt: skip
        answer = await http.send(outgoing, stream=True)
        if began := answer.headers.get("mcp-session-id"):
            sessions[began] = upstream

        async def relayed() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()
                await http.aclose()

        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(relayed(), answer.status_code, kept)

    methods = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)]), sent_to
