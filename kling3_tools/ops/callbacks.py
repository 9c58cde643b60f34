"""The provider's callbacks (Kling's `callback_url`), received on `[callbacks] listen`.

A callback is a hint, never a result: its body is not signed, so it only makes the task it names due now and
wakes this process's pollers, which read the status from the API before anything is delivered or recorded.
A forged or replayed callback costs at most one status check; one that is not JSON, is larger than
`MAX_BODY_BYTES` or names no task this store follows is refused and changes nothing."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..adapters.providers import CALLBACK_PATH
from .listener import bound, serve_on

if TYPE_CHECKING:
    from ..service import KlingService

log = logging.getLogger("kling3_tools.ops")

MAX_BODY_BYTES = 64 * 1024  # a task object is a few hundred bytes


def task_id_in(body: Any) -> str | None:
    """The task a callback names: Kling posts the task object (`task_id`), some gateways wrap it in `data`."""
    for candidate in (body, body.get("data") if isinstance(body, dict) else None):
        if isinstance(candidate, dict) and isinstance(candidate.get("task_id"), str | int):
            return str(candidate["task_id"])
    return None


def app(service: KlingService) -> Starlette:
    async def callback(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return PlainTextResponse("too large\n", status_code=413)
        try:
            task_id = task_id_in(json.loads(body))
        except (ValueError, RecursionError):
            return PlainTextResponse("not JSON\n", status_code=400)
        if task_id is None:
            return PlainTextResponse("no task_id\n", status_code=400)
        if not await service.store.due_now(task_id, time.time()):
            return PlainTextResponse("no such task being followed\n", status_code=404)
        service.wake_pollers()
        return Response(status_code=204)

    return Starlette(routes=[Route(CALLBACK_PATH, callback, methods=["POST"])])


@contextlib.asynccontextmanager
async def receiving(service: KlingService) -> AsyncIterator[None]:
    settings = service.settings.callbacks
    listener = bound("[callbacks] listen", settings.listen, *settings.address)
    async with serve_on(listener, app(service)):
        log.info("callbacks on http://%s%s (called at %s)", settings.listen, CALLBACK_PATH, settings.public_url)
        yield
