"""Kling 3.0 and Kling Video O3 video generation: typed core, sandbox, CLI.

The public names load on first use (PEP 562), so a command or server that needs only part of the package
does not pay for the rest at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import AspectRatio, Family, Mode, ModelSpec, TaskType, Tier, get_model, list_models
    from .client import AsyncKlingClient, KlingClient, RetryPolicy, WaitPolicy
    from .config import Settings
    from .errors import (
        APIConnectionError,
        APIError,
        AuthenticationError,
        BadRequestError,
        DownloadError,
        InsufficientCreditsError,
        InternalServerError,
        InvalidDurationError,
        InvalidPromptError,
        InvalidTypeError,
        KlingError,
        MissingImageError,
        MissingVideoError,
        OutcomeUnknownError,
        RateLimitError,
        RequestValidationError,
        SpendingRefusedError,
        StoreError,
        StoreUnavailableError,
        TaskExistsError,
        TaskFailedError,
        TaskNotFoundError,
        WaitTimeoutError,
    )
    from .models import GenerateRequest, Task, TaskStatus, quote
    from .version import __version__

_HOMES = {
    "APIConnectionError": "errors",
    "APIError": "errors",
    "AspectRatio": "catalog",
    "AsyncKlingClient": "client",
    "AuthenticationError": "errors",
    "BadRequestError": "errors",
    "DownloadError": "errors",
    "Family": "catalog",
    "GenerateRequest": "models",
    "InsufficientCreditsError": "errors",
    "InternalServerError": "errors",
    "InvalidDurationError": "errors",
    "InvalidPromptError": "errors",
    "InvalidTypeError": "errors",
    "KlingClient": "client",
    "KlingError": "errors",
    "MissingImageError": "errors",
    "MissingVideoError": "errors",
    "Mode": "catalog",
    "ModelSpec": "catalog",
    "OutcomeUnknownError": "errors",
    "RateLimitError": "errors",
    "RequestValidationError": "errors",
    "RetryPolicy": "client",
    "Settings": "config",
    "SpendingRefusedError": "errors",
    "StoreError": "errors",
    "StoreUnavailableError": "errors",
    "Task": "models",
    "TaskExistsError": "errors",
    "TaskFailedError": "errors",
    "TaskNotFoundError": "errors",
    "TaskStatus": "models",
    "TaskType": "catalog",
    "Tier": "catalog",
    "WaitPolicy": "client",
    "WaitTimeoutError": "errors",
    "__version__": "version",
    "get_model": "catalog",
    "list_models": "catalog",
    "quote": "models",
}

__all__ = [
    "APIConnectionError",
    "APIError",
    "AspectRatio",
    "AsyncKlingClient",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "Family",
    "GenerateRequest",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidDurationError",
    "InvalidPromptError",
    "InvalidTypeError",
    "KlingClient",
    "KlingError",
    "MissingImageError",
    "MissingVideoError",
    "Mode",
    "ModelSpec",
    "OutcomeUnknownError",
    "RateLimitError",
    "RequestValidationError",
    "RetryPolicy",
    "Settings",
    "SpendingRefusedError",
    "StoreError",
    "StoreUnavailableError",
    "Task",
    "TaskExistsError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskStatus",
    "TaskType",
    "Tier",
    "WaitPolicy",
    "WaitTimeoutError",
    "__version__",
    "get_model",
    "list_models",
    "quote",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
