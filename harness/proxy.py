"""A plain round-robin HTTP proxy on loopback, as a load balancer without sticky sessions would be: each request
to the next upstream in turn, its answer streamed back (server-sent events included)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


def round_robin(upstreams: list[str]) -> tuple[Starlette, list[str]]:
    """The proxy app, and the upstream each request went to, in order (for tests to see the turns)."""
    turns = itertools.cycle(upstreams)
    sent_to: list[str] = []
    http = httpx.AsyncClient(timeout=httpx.Timeout(10, read=None))

    async def forward(request: Request) -> StreamingResponse:
        upstream = next(turns)
        sent_to.append(upstream)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        outgoing = http.build_request(
            request.method, upstream + request.url.path, params=request.query_params, headers=headers,
            content=await request.body(),
        )  # fmt: skip
        answer = await http.send(outgoing, stream=True)

        async def body() -> AsyncIterator[bytes]:
            async for chunk in answer.aiter_raw():
                yield chunk

        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(body(), answer.status_code, kept, background=BackgroundTask(answer.aclose))

    methods = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)]), sent_to
