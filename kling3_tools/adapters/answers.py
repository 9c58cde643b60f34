"""Reading the API's answers: the envelope, the error body in whatever shape a server chose, Retry-After.

The seed page lists error codes but not the error body, so the code is taken
from any of the usual places (see `error_code`); an error wrapped in an HTTP
200 is still an error.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, TypeGuard

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from ..domain.catalog import MAX_RETRY_AFTER
from ..domain.errors import APIError, RateLimitError, error_class_for
from ..domain.tasks import Task


class Envelope(BaseModel):
    """The `{code, message, data}` wrapper of every answer."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    code: int | str | None = None
    message: str | None = None
    data: Any = None


class TaskAnswer(Envelope):
    """An envelope around a task (the answer to generate and to status), read from its bytes in one pass."""

    data: Task


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), capped at `MAX_RETRY_AFTER`; None when
    it is missing or unreadable (the caller's own backoff applies then)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def error_code(body: Any) -> str | None:
    """Find the error code in an error body, whatever shape the server chose.

    The page lists codes but not the body. We send none, and accept the code
    under `error_code`, `error.code`, `error` (a string), `code` (a string) or
    `data.error_code`.
    """
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    data = body.get("data")
    for candidate in (
        body.get("error_code"),
        error.get("code") if isinstance(error, dict) else error,
        body.get("code"),
        data.get("error_code") if isinstance(data, dict) else None,
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip().upper()
    return None


def error_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        for candidate in (error.get("message") if isinstance(error, dict) else None, body.get("message")):
            if isinstance(candidate, str) and candidate.strip():
                return candidate.strip()
    return fallback


def _wraps_an_error(envelope_code: Any) -> TypeGuard[int]:
    """An error wrapped in an HTTP 200: the envelope's numeric code is one of 4xx or 5xx."""
    return isinstance(envelope_code, int) and envelope_code >= 400


def raise_for_answer(response: httpx.Response) -> Any:
    """Return the `data` of a successful answer; raise the matching `APIError` otherwise."""
    try:
        body = response.json()
    except ValueError:
        body = None
    envelope_code = body.get("code") if isinstance(body, dict) else None
    status = response.status_code
    if status < 400 and _wraps_an_error(envelope_code):
        status = envelope_code
    if status < 400:
        if body is None:
            raise APIError(f"The API answered {status} with a body that is not JSON.", status_code=status)
        return Envelope.model_validate(body).data
    code = error_code(body)
    cls = error_class_for(status, code)
    message = error_message(body, f"HTTP {status} {response.reason_phrase}".strip())
    if cls is RateLimitError:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise RateLimitError(message, status_code=status, code=code, retry_after=retry_after)
    raise cls(message, status_code=status, code=code)


def task_from(data: Any) -> Task:
    if not isinstance(data, dict) or "task_id" not in data:
        raise APIError("The API answered without a task id.", status_code=200)
    return Task.model_validate(data)


def task_answer(response: httpx.Response) -> Task:
    """The task in a successful answer, parsed and checked from its bytes in one pass. An answer this pass does
    not take whole (an error, an odd envelope, no task id, not JSON) is decided by `raise_for_answer` and
    `task_from` instead, whose rules it follows: it returns only what they would have returned."""
    if response.status_code < 400:
        try:
            answer = TaskAnswer.model_validate_json(response.content)
        except ValidationError:
            pass
        else:
            if not _wraps_an_error(answer.code):
                return answer.data
    return task_from(raise_for_answer(response))
