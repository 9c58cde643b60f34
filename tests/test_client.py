"""The real client against the real sandbox over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import kling3_tools
from harness.helpers import free_port
from kling3_tools.adapters.answers import raise_for_answer, task_answer, task_from
from kling3_tools.adapters.client import AsyncKlingClient, RetryPolicy
from kling3_tools.adapters.pool import http_pool
from kling3_tools.adapters.sandbox.app import SAMPLE_VIDEO
from kling3_tools.adapters.sandbox.server import SandboxServer
from kling3_tools.adapters.sync_client import KlingClient
from kling3_tools.domain import catalog, errors
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.tasks import TaskStatus

from .conftest import FAST_RETRY, FAST_WAIT, add_fault, set_options, stats

IMG = "https://example.com/a.jpg"
VID = "https://example.com/a.mp4"
EXTRA_FIELDS = {
    catalog.Mode.TEXT: {},
    catalog.Mode.IMAGE: {"image": IMG},
    catalog.Mode.REFERENCE: {"images": [IMG, IMG]},
    catalog.Mode.EDIT: {"video": VID},
}


def request_for(spec: catalog.ModelSpec, **fields) -> GenerateRequest:
    return GenerateRequest.build(type=spec.type, prompt="A lighthouse in a storm", **EXTRA_FIELDS[spec.mode], **fields)


@pytest.mark.parametrize("spec", catalog.list_models(catalog.PRICES), ids=lambda s: s.type.value)
@pytest.mark.parametrize(("duration", "sound"), [(None, None), (12, False)])
async def test_every_type_is_charged_what_the_catalog_says(client, sandbox, spec, duration, sound):
    fields = {} if not spec.has_duration else {"duration": duration, "sound": sound}
    request = request_for(spec, **fields)
    before = stats(sandbox)["balance"]
    task = await client.generate(request)
    assert task.task_id.startswith(spec.task_id_prefix)
    assert task.status is TaskStatus.RUNNING
    assert task.consumed_credits == client.estimate_cost(request) == request.estimated_credits()
    assert before - stats(sandbox)["balance"] == task.consumed_credits


async def test_generate_wait_download(client, sandbox, tmp_path: Path):
    request = GenerateRequest.build(type="o3-std-text-to-video", prompt="Fox", duration=3)
    seen: list[str] = []
    task = await client.generate_and_wait(request, on_update=lambda t: seen.append(t.raw_status), policy=FAST_WAIT)
    assert task.status is TaskStatus.SUCCEEDED
    assert seen[0] == "IN_PROGRESS" and seen[-1] == "SUCCESS"
    assert task.consumed_credits == 108
    assert task.request is not None and task.request["prompt"] == "Fox"
    path = await client.download(task, tmp_path)
    assert path == tmp_path / f"{task.task_id}.mp4"
    data = path.read_bytes()
    assert data == SAMPLE_VIDEO
    assert data[4:8] == b"ftyp" and b"moov" in data and b"mdat" in data
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind


async def test_wait_raises_on_failure_with_the_reason(client, sandbox):
    set_options(sandbox, failure_rate=1.0)
    task = await client.generate(GenerateRequest.build(type="std-text-to-video", prompt="x"))
    with pytest.raises(errors.TaskFailedError, match="simulated generation failure") as info:
        await client.wait(task.task_id, policy=FAST_WAIT)
    assert info.value.task.task_id == task.task_id
    assert stats(sandbox)["balance"] == 100_000  # the sandbox refunds failed tasks


async def test_wait_timeout_keeps_the_task(client, sandbox):
    set_options(sandbox, finish_seconds=30)
    task = await client.generate(GenerateRequest.build(type="std-text-to-video", prompt="x"))
    with pytest.raises(errors.WaitTimeoutError) as info:
        await client.wait(task.task_id, timeout=0.2, policy=FAST_WAIT)
    assert info.value.task.task_id == task.task_id
    assert task.task_id in str(info.value)


# --- documented error codes, each from a real answer ---------------------------------


@pytest.mark.parametrize(
    ("body", "cls"),
    [
        ({"type": "pro-text-to-video", "prompt": ""}, errors.InvalidPromptError),
        ({"type": "pro-text-to-video", "prompt": "x", "duration": 30}, errors.InvalidDurationError),
        ({"type": "ultra-text-to-video", "prompt": "x"}, errors.InvalidTypeError),
        ({"type": "pro-image-to-video", "prompt": "x"}, errors.MissingImageError),
        ({"type": "o3-pro-video-edit", "prompt": "x"}, errors.MissingVideoError),
        ({"type": "pro-text-to-video", "prompt": "x", "aspect_ratio": "4:3"}, errors.BadRequestError),
    ],
)
def test_400_codes_map_to_their_classes(sandbox, body, cls):
    response = httpx.post(
        f"{sandbox.url}/api/generate", json=body, headers={"Authorization": f"Bearer {sandbox.api_key}"}
    )
    with pytest.raises(cls) as info:
        raise_for_answer(response)
    assert type(info.value) is cls
    assert info.value.status_code == 400
    assert info.value.retryable is False
    assert info.value.message


async def test_locally_bypassed_validation_is_still_mapped(client, sandbox):
    unchecked = GenerateRequest.model_construct(type=catalog.TaskType.PRO_TEXT_TO_VIDEO, prompt="")
    with pytest.raises(errors.InvalidPromptError):
        await client.generate(unchecked)
    assert stats(sandbox)["requests"]["generate"] == 1  # a 400 is never retried


async def test_invalid_api_key(sandbox):
    async with AsyncKlingClient("wrong-key", base_url=sandbox.url, retry=FAST_RETRY) as client:
        with pytest.raises(errors.AuthenticationError) as info:
            await client.status("n75anything")
    assert info.value.code == "INVALID_API_KEY" and info.value.status_code == 401
    assert stats(sandbox)["requests"]["status"] == 1


async def test_insufficient_credits(client, sandbox):
    set_options(sandbox, starting_balance=100)
    with pytest.raises(errors.InsufficientCreditsError) as info:
        await client.generate(GenerateRequest.build(type="pro-text-to-video", prompt="x"))
    assert info.value.status_code == 402
    assert stats(sandbox)["tasks"] == 0


async def test_rate_limited_and_internal_error_when_retries_run_out(sandbox):
    async with AsyncKlingClient(sandbox.api_key, base_url=sandbox.url, retry=RetryPolicy(max_retries=0)) as client:
        add_fault(sandbox, endpoint="status", status=429, retry_after=7)
        with pytest.raises(errors.RateLimitError) as limited:
            await client.status("n75x")
        assert (limited.value.retry_after, limited.value.retryable, limited.value.status_code) == (7, True, 429)
        add_fault(sandbox, endpoint="status", status=500)
        with pytest.raises(errors.InternalServerError) as failed:
            await client.status("n75x")
        assert failed.value.code == "INTERNAL_ERROR" and failed.value.retryable


async def test_unknown_task_is_not_found(client):
    with pytest.raises(errors.TaskNotFoundError):
        await client.status("n75doesnotexist")


def test_error_envelope_inside_http_200_is_an_error():
    response = httpx.Response(200, json={"code": 402, "message": "Not enough credits", "data": None})
    with pytest.raises(errors.InsufficientCreditsError, match="Not enough credits"):
        raise_for_answer(response)


@pytest.mark.parametrize(
    "body",
    [
        {"code": 400, "message": "bad", "error": {"code": "MISSING_IMAGE", "message": "bad"}},
        {"code": 400, "message": "bad", "error": "MISSING_IMAGE"},
        {"code": "MISSING_IMAGE", "message": "bad"},
        {"code": 400, "message": "bad", "data": {"error_code": "MISSING_IMAGE"}},
    ],
)
def test_error_code_is_found_in_any_usual_place(body):
    with pytest.raises(errors.MissingImageError):
        raise_for_answer(httpx.Response(400, json=body))


# --- the retry policy: never spend twice ---------------------------------------------


async def test_generate_read_timeout_is_outcome_unknown_and_not_resent(sandbox):
    set_options(sandbox, generate_delay=1.0)
    async with AsyncKlingClient(
        sandbox.api_key, base_url=sandbox.url, timeout=httpx.Timeout(0.3), retry=FAST_RETRY
    ) as client:
        with pytest.raises(errors.OutcomeUnknownError, match="dashboard") as info:
            await client.generate(GenerateRequest.build(type="pro-text-to-video", prompt="x"))
    assert not info.value.retryable
    counters = stats(sandbox)
    assert counters["requests"]["generate"] == 1
    assert counters["tasks"] == 1  # the task exists and was billed: that is why we never resend


@contextlib.asynccontextmanager
async def server_that_hangs_up(requests_seen: list[bytes]):
    """A peer that reads a whole request, then closes the connection without answering."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        requests_seen.append(head + await reader.readexactly(length))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def test_generate_dropped_after_sending_is_outcome_unknown_and_not_resent():
    seen: list[bytes] = []
    async with server_that_hangs_up(seen) as url, AsyncKlingClient("k", base_url=url, retry=FAST_RETRY) as client:
        with pytest.raises(errors.OutcomeUnknownError):
            await client.generate(GenerateRequest.build(type="pro-text-to-video", prompt="x"))
    assert len(seen) == 1
    assert seen[0].startswith(b"POST /api/generate")


async def test_status_dropped_after_sending_is_retried():
    seen: list[bytes] = []
    async with server_that_hangs_up(seen) as url, AsyncKlingClient("k", base_url=url, retry=FAST_RETRY) as client:
        with pytest.raises(errors.APIConnectionError) as info:
            await client.status("n75x")
    assert not isinstance(info.value, errors.OutcomeUnknownError)
    assert len(seen) == 1 + FAST_RETRY.max_retries


@pytest.mark.parametrize("call", ["generate", "status"])
async def test_connection_refused_is_retried_for_both(call):
    attempts: list[str] = []

    async def count(request: httpx.Request) -> None:
        attempts.append(request.url.path)

    http = httpx.AsyncClient(event_hooks={"request": [count]})
    client = AsyncKlingClient("k", base_url=f"http://127.0.0.1:{free_port()}", retry=FAST_RETRY, http_client=http)
    with pytest.raises(errors.APIConnectionError) as info:
        if call == "generate":
            await client.generate(GenerateRequest.build(type="pro-text-to-video", prompt="x"))
        else:
            await client.status("n75x")
    await http.aclose()
    assert not isinstance(info.value, errors.OutcomeUnknownError)
    assert len(attempts) == 1 + FAST_RETRY.max_retries


async def test_generate_retries_a_429_and_creates_one_task(client, sandbox):
    add_fault(sandbox, endpoint="generate", status=429, retry_after=0.2)
    started = time.monotonic()
    task = await client.generate(GenerateRequest.build(type="pro-text-to-video", prompt="x"))
    assert time.monotonic() - started >= 0.2  # Retry-After was honoured
    counters = stats(sandbox)
    assert counters["requests"]["generate"] == 2
    assert counters["tasks"] == 1
    assert task.task_id.startswith("n75")


async def test_generate_does_not_retry_a_500(client, sandbox):
    add_fault(sandbox, endpoint="generate", status=500)
    with pytest.raises(errors.InternalServerError):
        await client.generate(GenerateRequest.build(type="pro-text-to-video", prompt="x"))
    assert stats(sandbox)["requests"]["generate"] == 1


async def test_status_retries_5xx_and_429(client, sandbox):
    task = await client.generate(GenerateRequest.build(type="pro-text-to-video", prompt="x"))
    add_fault(sandbox, endpoint="status", status=503, count=2)
    add_fault(sandbox, endpoint="status", status=429, retry_after=0)
    assert (await client.status(task.task_id)).task_id == task.task_id
    assert stats(sandbox)["requests"]["status"] == 4


async def test_the_rate_limiter_of_the_sandbox_sends_retry_after(sandbox):
    set_options(sandbox, rate_limit_per_second=1, rate_limit_burst=1)
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    async with httpx.AsyncClient(base_url=sandbox.url, headers=headers) as http:
        answers = [await http.get("/api/status", params={"task_id": "x"}) for _ in range(3)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["error_code"] == "RATE_LIMITED"


# --- the key never leaks ----------------------------------------------------------------

SECRET = "sk-live-DO-NOT-LEAK-1234567890"


async def test_the_key_never_appears_in_errors_reprs_or_logs(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    set_options(sandbox, api_key=SECRET)
    add_fault(sandbox, endpoint="status", status=500, count=2)
    add_fault(sandbox, endpoint="generate", status=500)
    caught: list[errors.KlingError] = []
    for key in (SECRET, SECRET[::-1]):
        async with AsyncKlingClient(key, base_url=sandbox.url, retry=FAST_RETRY) as client:
            for call in (
                client.status("n75x"),
                client.generate(GenerateRequest.build(type="pro-text-to-video", prompt="x")),
            ):
                try:
                    await call
                except errors.KlingError as exc:
                    caught.append(exc)
            texts = [repr(client), *map(str, caught), *map(repr, caught), caplog.text]
    assert [type(exc) for exc in caught] == [
        errors.TaskNotFoundError,  # after two retried 500s
        errors.InternalServerError,
        errors.AuthenticationError,
        errors.AuthenticationError,
    ]
    assert "retry 2/3" in caplog.text  # the retries were logged, and those lines were checked
    for text in texts:
        assert SECRET not in text
        assert SECRET[::-1] not in text


async def test_a_client_without_a_key_estimates_and_names_every_way_to_give_one_before_sending(monkeypatch):
    monkeypatch.delenv("KLING_API_KEY", raising=False)
    request = GenerateRequest.build(type="std-text-to-video", prompt="a fox")
    async with AsyncKlingClient(None, base_url="http://127.0.0.1:9") as client:  # nothing listens on port 9
        assert client.estimate_cost(request) == 300
        with pytest.raises(errors.NoAPIKeyError, match="KLING_API_KEY") as info:
            await client.generate(request)
    assert "api_key=" in str(info.value) and "sandbox=True" in str(info.value)


def test_sync_facade(sandbox, tmp_path: Path):
    with KlingClient(sandbox.api_key, base_url=sandbox.url, retry=FAST_RETRY) as client:
        request = GenerateRequest.build(type="o3-pro-video-edit", prompt="snow", video=VID)
        task = client.generate_and_wait(request, policy=FAST_WAIT)
        assert task.consumed_credits == 435 == client.estimate_cost(request)
        assert client.download(task, tmp_path / "edit.mp4").read_bytes() == SAMPLE_VIDEO


def test_sandbox_server_serves_on_a_chosen_port():
    port = free_port()
    with SandboxServer(port=port) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{server.url}/sandbox/stats").json()["balance"] == 100_000


async def test_api_requests_name_the_tool_even_on_a_shared_http_client(sandbox):
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request.headers["user-agent"])

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as shared:
        client = AsyncKlingClient(sandbox.api_key, base_url=sandbox.url, http_client=shared)
        await client.generate(GenerateRequest.build(type="pro-text-to-video", prompt="x"))
    assert seen == [f"kling3-tools/{kling3_tools.__version__}"]


# --- reading answers: one pass for a task, the full rules for anything else -------------------------------

TASK = {"task_id": "n75a", "status": "SUCCESS", "consumed_credits": 400, "response": ["https://cdn.example/a.mp4"]}
ODD_TASKS = [
    TASK,
    {**TASK, "created_at": "2026-11-30T10:00:00Z", "request": {"prompt": "x"}, "type": "std-text-to-video"},
    {**TASK, "consumed_credits": -5, "response": [{"url": "https://cdn.example/b.mp4"}, 7, None]},
    {**TASK, "consumed_credits": "400", "status": 3, "created_at": 1764496800, "extra": {"deep": [1.5, None]}},
    {**TASK, "response": "https://cdn.example/c.mp4", "error_message": "<b>markup</b>"},
    {**TASK, "task_id": 123},
    {**TASK, "task_id": "../../etc", "status": None, "response": None},
    {**TASK, "created_at": "yesterday"},
    {**TASK, "consumed_credits": 1e400},
    {key: value for key, value in TASK.items() if key != "task_id"},
    None,
    [],
    "n75a",
]
ODD_CODES = [None, 0, 200, "200", 200.0, 299, 400, 402, 500, "500", True, "RATE_LIMITED", [200]]
ODD_BODIES = [
    b"",
    b"not json",
    b'{"code": 200, "data": {"task_id": "n75a"}} trailing',
    b'{"code": 200, "data": {"task_id": "n75a", "task_id": "n75b"}}',
    b'{"code": 200, "data": {"task_id": "n75a", "status": "\\ud800"}}',
    b'{"code": 200, "data": {"task_id": "n75a", "status": "\xff"}}',
    b'\xef\xbb\xbf{"code": 200, "data": {"task_id": "n75a"}}',
    '{"code": 200, "data": {"task_id": "n75a"}}'.encode("utf-16"),
    b'{"code": NaN, "data": {"task_id": "n75a", "consumed_credits": Infinity}}',
    b'{"code": 200, "data": {"task_id": "n75a", "consumed_credits": 123456789012345678901234567890}}',
    b"[" * 5000 + b"]" * 5000,
]


def outcome(read: Callable[[httpx.Response], Any], response: httpx.Response) -> tuple[Any, ...]:
    try:
        task = read(response)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return ("task", type(task), task.model_dump())


def test_the_one_pass_reading_of_a_task_decides_every_answer_as_the_full_rules_do():
    """`task_answer` parses generate's and status's answers from their bytes in one pass (jiter, in pydantic);
    whatever it would not take whole goes to `raise_for_answer` and `task_from`. Over envelopes, codes and
    bodies that lie, both readings give the same task or the same error."""
    bodies = [
        json.dumps({"code": code, "message": "m", "data": data}).encode() for code in ODD_CODES for data in ODD_TASKS
    ]
    bodies += [json.dumps(data).encode() for data in ODD_TASKS] + ODD_BODIES
    compared = 0
    for status in (200, 201, 302, 400, 402, 429, 500):
        for body in bodies:
            response = httpx.Response(status, content=body)
            assert outcome(task_answer, response) == outcome(lambda r: task_from(raise_for_answer(r)), response), (
                status,
                body[:200],
            )
            compared += 1
    assert compared > 1000


async def test_the_pooled_client_keeps_no_cookies():
    """Nothing an answer sets is kept or sent back: the API authenticates by key, video hosts by signed URL. Plain
    httpx sends the cookie back, which shows the server sets one."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from kling3_tools.adapters.sandbox.server import ThreadedServer

    cookies_seen: list[str | None] = []

    async def status(request: Request) -> JSONResponse:
        cookies_seen.append(request.headers.get("cookie"))
        answer = JSONResponse({"code": 200, "data": {"task_id": request.query_params["task_id"], "status": "SUCCESS"}})
        answer.set_cookie("session", "planted-by-the-server")
        return answer

    server = ThreadedServer(Starlette(routes=[Route("/api/status", status)])).start()
    try:
        async with AsyncKlingClient("key", base_url=server.url) as ours:
            for _ in range(2):
                assert (await ours.status("n75a")).task_id == "n75a"
        assert cookies_seen == [None, None]
        async with http_pool() as pool, AsyncKlingClient("key", base_url=server.url, http_client=pool) as given:
            pool.cookies = {"mine": "1"}  # cookies given to the client are sent as usual
            for _ in range(2):
                await given.status("n75a")
        assert cookies_seen[2:] == ["mine=1", "mine=1"]
        async with (
            httpx.AsyncClient() as plain,
            AsyncKlingClient("key", base_url=server.url, http_client=plain) as theirs,
        ):
            for _ in range(2):
                await theirs.status("n75a")
        assert cookies_seen[4:] == [None, "session=planted-by-the-server"]
    finally:
        server.stop()
