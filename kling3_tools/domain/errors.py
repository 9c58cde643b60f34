"""Every way a call can fail, as one exception tree.

    KlingError
    ├── RequestValidationError      bad input, caught before any HTTP call
    ├── APIError                    the API answered with an error
    │   ├── BadRequestError         400
    │   │   ├── InvalidPromptError          INVALID_PROMPT
    │   │   ├── InvalidDurationError        INVALID_DURATION
    │   │   ├── InvalidTypeError            INVALID_TYPE
    │   │   ├── MissingImageError           MISSING_IMAGE
    │   │   └── MissingVideoError           MISSING_VIDEO
    │   ├── AuthenticationError     401 INVALID_API_KEY
    │   ├── InsufficientCreditsError 402 INSUFFICIENT_CREDITS
    │   ├── TaskNotFoundError       404
    │   ├── RateLimitError          429 RATE_LIMITED
    │   └── InternalServerError     5xx INTERNAL_ERROR
    ├── APIConnectionError          no answer; the request certainly did not arrive
    │   └── OutcomeUnknownError     a generate was sent but its answer was lost
    ├── DownloadError               a video could not be fetched safely (size, type, address, path)
    ├── TaskFailedError             the task ended without a video
    ├── WaitTimeoutError            the task was still running when the wait ended
    ├── SpendingRefusedError        a local budget or confirmation rule stopped a generate
    └── StoreError                  the task store cannot be used (missing extra, not migrated, down)
        ├── StoreUnavailableError   the store's server did not answer, retried as long as the call allowed
        └── TaskExistsError         a task id is already recorded

Every error carries `status_code` (or None), `code`, `message` and
`retryable`. None of them ever holds the API key: messages are built from the
server's words and our own, never from request headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .tasks import Task


class KlingError(Exception):
    """Base of every error raised by kling3_tools."""

    default_code: ClassVar[str] = "KLING_ERROR"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code or self.default_code
        self.retryable = self.default_retryable if retryable is None else retryable

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status_code={self.status_code!r}, message={self.message!r})"


class RequestValidationError(KlingError):
    """The request breaks a documented rule; nothing was sent."""

    default_code = "VALIDATION_ERROR"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"- {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"The request has {len(problems)} {noun}:\n{lines}")


class APIError(KlingError):
    """The API answered with an error status or an error envelope."""

    default_code = "API_ERROR"


class BadRequestError(APIError):
    """400: the API rejected the request."""

    default_code = "BAD_REQUEST"


class InvalidPromptError(BadRequestError):
    """INVALID_PROMPT: the prompt is invalid or empty."""

    default_code = "INVALID_PROMPT"


class InvalidDurationError(BadRequestError):
    """INVALID_DURATION: duration out of the supported range."""

    default_code = "INVALID_DURATION"


class InvalidTypeError(BadRequestError):
    """INVALID_TYPE: unsupported task type."""

    default_code = "INVALID_TYPE"


class MissingImageError(BadRequestError):
    """MISSING_IMAGE: image-to-video needs an image."""

    default_code = "MISSING_IMAGE"


class MissingVideoError(BadRequestError):
    """MISSING_VIDEO: video-edit needs a video."""

    default_code = "MISSING_VIDEO"


class AuthenticationError(APIError):
    """401 INVALID_API_KEY: the API key is missing or invalid."""

    default_code = "INVALID_API_KEY"


class NoAPIKeyError(AuthenticationError):
    """No API key was given: raised by the first call that needs the API, before anything is sent or reserved
    (what spends nothing works without one). Its message says what to do in Python; the CLI, the MCP server
    and the bot say it in their own terms."""

    default_code = "NO_API_KEY"

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "No API key: pass api_key= (Kling's own API: access_key= and secret_key=) to Settings.load(), or set "
            "KLING_API_KEY; to try everything with no key and no cost, use KlingService.open(settings, sandbox=True)."
        )


class InsufficientCreditsError(APIError):
    """402 INSUFFICIENT_CREDITS: not enough credits for this operation."""

    default_code = "INSUFFICIENT_CREDITS"


class TaskNotFoundError(APIError):
    """404: the API knows no task with this id."""

    default_code = "TASK_NOT_FOUND"


class RateLimitError(APIError):
    """429 RATE_LIMITED: too many requests; `retry_after` says how long to wait."""

    default_code = "RATE_LIMITED"
    default_retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class InternalServerError(APIError):
    """5xx INTERNAL_ERROR: the API failed; try again later."""

    default_code = "INTERNAL_ERROR"
    default_retryable = True


class APIConnectionError(KlingError):
    """The API could not be reached; the request did not arrive."""

    default_code = "CONNECTION_ERROR"
    default_retryable = True


class OutcomeUnknownError(APIConnectionError):
    """A generate request was sent but no answer came back.

    The task may exist and may be billed. It is never retried automatically.
    Through `KlingService`, `attempt_id` names the ledger's record of it, which
    counts against every limit until `kling3 tasks resolve` settles it.
    """

    default_code = "OUTCOME_UNKNOWN"
    default_retryable = False

    def __init__(self, message: str, *, attempt_id: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.attempt_id = attempt_id


class DownloadError(KlingError):
    """A video was not fetched: refused address or path, too large, empty, not a video, too many redirects."""

    default_code = "DOWNLOAD_FAILED"


class TaskFailedError(KlingError):
    """The task ended in a failed state; `task` holds what the API said."""

    default_code = "TASK_FAILED"

    def __init__(self, task: Task) -> None:
        self.task = task
        reason = task.error_message or f"status {task.raw_status}"
        super().__init__(f"Task {task.task_id} failed: {reason}")


class WaitTimeoutError(KlingError):
    """The wait ended before the task did; the task goes on and may still be billed."""

    default_code = "WAIT_TIMEOUT"
    default_retryable = True

    def __init__(self, task: Task, waited: float) -> None:
        self.task = task
        super().__init__(
            f"Task {task.task_id} is still {task.status.value} after {waited:.0f}s; "
            f"it keeps running on the API side. Check again later with its task id."
        )


class SpendingRefusedError(KlingError):
    """A configured spending limit, or the lack of a confirmation, refused a generate; nothing was spent."""

    default_code = "SPENDING_REFUSED"

    def __init__(self, message: str, *, limit: str = "", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.limit = limit  # the key that refused, `[section] key`; empty for a refused confirmation


class StoreError(KlingError):
    """The task store cannot be opened or used as configured."""

    default_code = "STORE_ERROR"


class StoreUnavailableError(StoreError):
    """The store's server could not be reached (down, restarting, failing over) for as long as the call waited."""

    default_retryable = True


class TaskExistsError(StoreError):
    """A task with this id is already recorded."""

    default_code = "TASK_EXISTS"


_ERRORS_BY_CODE: dict[str, type[APIError]] = {
    cls.default_code: cls
    for cls in (
        InvalidPromptError,
        InvalidDurationError,
        InvalidTypeError,
        MissingImageError,
        MissingVideoError,
        AuthenticationError,
        InsufficientCreditsError,
        TaskNotFoundError,
        RateLimitError,
        InternalServerError,
    )
}

_ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: TaskNotFoundError,
    429: RateLimitError,
}


def error_class_for(status_code: int, code: str | None) -> type[APIError]:
    """The class for an error answer: by its code when known, else by its status."""
    if code and code in _ERRORS_BY_CODE:
        return _ERRORS_BY_CODE[code]
    if status_code >= 500:
        return InternalServerError
    return _ERRORS_BY_STATUS.get(status_code, APIError)


def install_hint(extra: str) -> str:
    """How to add an optional part, from PyPI or from a checkout of the repository."""
    return f"pip install 'kling3-tools[{extra}]' (from a checkout: pip install -e '.[{extra}]')"


def missing_part(what: str, extra: str, exc: ImportError) -> str:
    """Why `what` cannot start: its extra is missing, or (an install older than this checkout) one of our own
    packages is not installed at all."""
    if exc.name and exc.name.split(".")[0] == "kling3_discord":
        return f"{what} is not installed with this kling3-tools: reinstall it (from a checkout: pip install -e .)"
    return f"{what} needs the {extra} extra: {install_hint(extra)} ({exc})"
