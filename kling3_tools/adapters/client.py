"""The HTTP client: one pooled `httpx.AsyncClient`, typed results, a retry policy that respects money.

Retries:
- `GET /api/status` and downloads are safe to repeat: they retry on 429
  (honouring `Retry-After`), 5xx and connection errors, with capped
  exponential backoff and jitter.
- `POST /api/generate` spends credits, so it retries only when the API
  certainly created nothing: a 429, or a connection that failed before the
  request was sent. If the request went out and no answer came back (read
  timeout, dropped connection), it raises `OutcomeUnknownError` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from ..domain.catalog import TaskType
from ..domain.characters import CharacterTask
from ..domain.errors import (
    APIConnectionError,
    APIError,
    InternalServerError,
    KlingError,
    NoAPIKeyError,
    OutcomeUnknownError,
    RateLimitError,
    TaskFailedError,
    TaskNotFoundError,
    WaitTimeoutError,
)
from ..domain.models import GenerateRequest
from ..domain.tasks import Task, TaskStatus
from ..version import __version__
from . import downloads
from .pool import DEFAULT_TIMEOUT, http_pool, load_backend
from .providers import Call, Credentials, Kling3Api, Provider
from .providers.base import CharacterCalls

DEFAULT_DEADLINE = 120.0  # seconds for one whole answer, however slowly it drips
MAX_ANSWER_BYTES = 1024 * 1024  # an API answer is a small JSON object; anything larger is not read

log = logging.getLogger("kling3_tools")
USER_AGENT = f"kling3-tools/{__version__}"

T = TypeVar("T")
UpdateCallback = Callable[[Task], Awaitable[None] | None]

# Raised before a single byte of the request left this machine.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times, and how patiently, safe requests are repeated."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0

    def longest(self, per_try: float) -> float:
        """The most a call may take, every try at `per_try` seconds and every wait between them included."""
        return per_try * (self.max_retries + 1) + self.max_delay * self.max_retries

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.base_delay * 2.0 ** (attempt - 1), self.max_delay)
        return backoff * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """How `wait` spaces its status checks: growing intervals with jitter."""

    first_interval: float = 2.0
    factor: float = 1.5
    max_interval: float = 15.0

    def intervals(self) -> Iterator[float]:
        interval = self.first_interval
        while True:
            yield interval * random.uniform(0.8, 1.2)
            interval = min(interval * self.factor, self.max_interval)


class AsyncKlingClient:
    """Async client for the Kling 3.0 / O3 API. Use one per process and close it."""

    def __init__(
        self,
        api_key: str | SecretStr | None = None,
        *,
        provider: Provider | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        if provider is None:
            key = api_key if api_key is not None else os.environ.get("KLING_API_KEY")
            provider = Kling3Api(Credentials(api_key=key if isinstance(key, SecretStr) else SecretStr(key or "")))
        self.provider = provider
        self.base_url = (base_url or os.environ.get("KLING_BASE_URL") or provider.default_base_url).rstrip("/")
        self.retry = retry or RetryPolicy()
        self.deadline = deadline
        self.url_policy = downloads.UrlPolicy.for_api(self.base_url)
        self._owns_http = http_client is None
        self._http = http_client or http_pool(timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def with_options(self, *, retry: RetryPolicy) -> AsyncKlingClient:
        """A client sharing this one's key and connection pool, with another retry policy.

        Closing it leaves the pool open; the original client owns it.
        """
        return AsyncKlingClient(
            provider=self.provider, base_url=self.base_url, retry=retry, http_client=self._http, deadline=self.deadline
        )

    async def __aenter__(self) -> AsyncKlingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- API calls -------------------------------------------------------

    async def generate(self, request: GenerateRequest, *, attempt_id: str | None = None) -> Task:
        """Submit a task (spends credits). Never repeated once the request may have arrived."""
        return await self._task(self.provider.generate(request, attempt_id=attempt_id), safe_after_send=False)

    async def status(self, task_id: str, type_: TaskType | str | None = None) -> Task:
        """The task's current state, as the API reports it (`type_` where the provider's path needs it; without
        it, each place the task may be is asked in turn)."""
        calls = self.provider.status(task_id, type_)
        for call in calls[:-1]:
            with contextlib.suppress(TaskNotFoundError):
                return await self._task(call, safe_after_send=True)
        return await self._task(calls[-1], safe_after_send=True)

    async def find(self, attempt_id: str, type_: TaskType | str) -> Task | None:
        """The task a generate created, looked up by the attempt id it was sent with; None when the provider
        cannot look tasks up that way or has no such task (the generate created nothing)."""
        call = self.provider.find(attempt_id, type_)
        if call is None:
            return None
        try:
            return await self._task(call, safe_after_send=True)
        except TaskNotFoundError:
            return None

    async def wait(
        self,
        task_id: str,
        type_: TaskType | str | None = None,
        *,
        timeout: float = 900.0,
        on_update: UpdateCallback | None = None,
        policy: WaitPolicy | None = None,
    ) -> Task:
        """Poll until the task ends; return it when it succeeded.

        `on_update` is called (sync or async) with the task after every check.
        Raises `TaskFailedError` when it failed and `WaitTimeoutError` (holding
        the last known task) when `timeout` seconds pass first.
        """
        started = time.monotonic()
        for interval in (policy or WaitPolicy()).intervals():
            task = await self.status(task_id, type_)
            if on_update is not None:
                result = on_update(task)
                if inspect.isawaitable(result):
                    await result
            if task.status is TaskStatus.SUCCEEDED:
                return task
            if task.status is TaskStatus.FAILED:
                raise TaskFailedError(task)
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                raise WaitTimeoutError(task, time.monotonic() - started)
            await asyncio.sleep(min(interval, remaining))
        raise AssertionError("unreachable")  # pragma: no cover

    async def generate_and_wait(
        self,
        request: GenerateRequest,
        *,
        timeout: float = 900.0,
        on_update: UpdateCallback | None = None,
        policy: WaitPolicy | None = None,
    ) -> Task:
        """Submit, then wait for the result."""
        task = await self.generate(request)
        return await self.wait(task.task_id, timeout=timeout, on_update=on_update, policy=policy)

    async def download(self, task: Task, path: str | Path, *, max_bytes: int = downloads.DEFAULT_MAX_BYTES) -> Path:
        """Stream the task's video to `path` (a file, or a folder for `<task id>.mp4`), atomically and safely:
        see `downloads` for the rules an API-supplied URL and task id must pass."""
        url = task.video_url
        if not url:
            raise KlingError(f"Task {task.task_id} has no video to download (status {task.raw_status}).")
        target = Path(path).expanduser()
        if target.is_dir() or str(path).endswith(("/", os.sep)):
            target = downloads.target_in(target, task.task_id)
        policy, http = self.url_policy, self._http
        await self._with_retries(
            lambda: downloads.to_file(http, url, target, policy=policy, max_bytes=max_bytes),
            what=f"GET the video of {task.task_id}",
            safe_after_send=True,
        )
        return target

    async def load_ahead(self) -> None:
        """Load what the first request and answer would: a long-lived process calls it as it starts, so that its
        first answers wait on no import; a one-shot command never does."""
        await load_backend()
        self.provider.load_ahead()

    def require_key(self) -> None:
        """Raise `NoAPIKeyError` when no key was given: a client without one still estimates and checks."""
        if self.provider.authorization() is None:
            raise NoAPIKeyError

    def estimate_cost(self, request: GenerateRequest) -> int:
        """What the request will spend by this client's provider's prices; no HTTP."""
        return request.estimated_credits(self.provider.prices)

    async def character(self, step: Callable[[CharacterCalls], Call], *, safe_after_send: bool) -> CharacterTask:
        """One step of making, reading or deleting a character (`RequestValidationError` where the provider has
        none); making one is sent once, never repeated once it may have arrived."""
        calls = self.provider.character_calls()
        return await self._api(step(calls), safe_after_send=safe_after_send, read=calls.read)

    async def _task(self, call: Call, *, safe_after_send: bool) -> Task:
        return await self._api(call, safe_after_send=safe_after_send, read=self.provider.read_task)

    async def _api(self, call: Call, *, safe_after_send: bool, read: Callable[[httpx.Response], T]) -> T:
        self.require_key()

        async def send() -> T:
            # Sent with each request, not set on the httpx client: a shared client (the service's pool) is not ours.
            headers = {"Authorization": self.provider.authorization() or "", "User-Agent": USER_AGENT}
            try:
                async with asyncio.timeout(self.deadline):
                    response = await self._read_capped(
                        call.method, call.path, json=call.json, params=call.params, headers=headers
                    )
            except TimeoutError:
                raise httpx.ReadTimeout(f"no whole answer within {self.deadline:g} s") from None
            log.debug("%s %s -> %s", call.method, call.path, response.status_code)
            return read(response)

        return await self._with_retries(send, what=f"{call.method} {call.path}", safe_after_send=safe_after_send)

    async def _read_capped(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer, read whole only while it stays under `MAX_ANSWER_BYTES`."""
        async with self._http.stream(method, self.base_url + path, **kwargs) as streamed:
            if _declared_small(streamed.headers):
                await streamed.aread()  # h11 reads a plain body up to its Content-Length, never past it
                return streamed
            body = bytearray()  # decoded bytes are counted: a small compressed answer may unpack to gigabytes
            async for chunk in streamed.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise APIError(
                        f"The API's answer to {method} {path} is larger than {MAX_ANSWER_BYTES // 1024} KB; "
                        "it was not read.",
                        status_code=streamed.status_code,
                    )
        return httpx.Response(streamed.status_code, headers=streamed.headers, content=bytes(body))

    async def _with_retries(self, send: Callable[[], Coroutine[Any, Any, T]], *, what: str, safe_after_send: bool) -> T:
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                return await send()
            except _NOT_SENT as exc:
                failure: KlingError = APIConnectionError(f"Could not reach the API ({what}): {type(exc).__name__}.")
            except httpx.LocalProtocolError:  # h11 refused to write it (its text quotes the header: never shown)
                raise APIConnectionError(
                    f"{what} was not sent: a header is not valid HTTP (is there a space or a line break in the "
                    "API key?).",
                    retryable=False,
                ) from None
            except httpx.TransportError as exc:
                if not safe_after_send:
                    raise OutcomeUnknownError(
                        f"{what} was sent but no answer came back ({type(exc).__name__}). A task may have "
                        "been created and billed: check your dashboard before trying again."
                    ) from None
                failure = APIConnectionError(f"The connection failed during {what}: {type(exc).__name__}.")
            except RateLimitError as exc:
                if not safe_after_send and exc.status_code != 429:  # "rate limited" in a 5xx body: it may exist
                    raise
                failure, retry_after = exc, exc.retry_after
            except InternalServerError as exc:
                if not safe_after_send:
                    raise
                failure = exc
            if attempt > self.retry.max_retries:
                raise failure
            delay = self.retry.delay(attempt, retry_after)
            log.info("%s failed (%s); retry %d/%d in %.1fs", what, failure.code, attempt, self.retry.max_retries, delay)
            await asyncio.sleep(delay)


def _declared_small(headers: httpx.Headers) -> bool:
    """A body neither compressed nor chunked, whose Content-Length is within the cap."""
    length = headers.get("content-length", "")
    plain = "content-encoding" not in headers and "transfer-encoding" not in headers
    return plain and length.isdigit() and int(length) <= MAX_ANSWER_BYTES
