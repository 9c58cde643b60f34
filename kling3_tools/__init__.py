"""Kling 3.0 and Kling Video O3 video generation: typed core, sandbox, CLI.

The public names load on first use (PEP 562), so a command or server that needs only part of the package
does not pay for the rest at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapters.client import AsyncKlingClient, RetryPolicy, WaitPolicy
    from .adapters.sync_client import KlingClient
    from .config import Settings
    from .domain.catalog import AspectRatio, Family, Mode, ModelSpec, TaskType, Tier, get_model, list_models
    from .domain.errors import (
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
        NoAPIKeyError,
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
    from .domain.models import GenerateRequest
    from .domain.rules import quote
    from .domain.tasks import Task, TaskStatus
    from .service import KlingService
    from .version import __version__

_HOMES = {
    "APIConnectionError": "domain.errors",
    "APIError": "domain.errors",
    "AspectRatio": "domain.catalog",
    "AsyncKlingClient": "adapters.client",
    "AuthenticationError": "domain.errors",
    "BadRequestError": "domain.errors",
    "DownloadError": "domain.errors",
    "Family": "domain.catalog",
    "GenerateRequest": "domain.models",
    "InsufficientCreditsError": "domain.errors",
    "InternalServerError": "domain.errors",
    "InvalidDurationError": "domain.errors",
    "InvalidPromptError": "domain.errors",
    "InvalidTypeError": "domain.errors",
    "KlingClient": "adapters.sync_client",
    "KlingError": "domain.errors",
    "KlingService": "service",
    "MissingImageError": "domain.errors",
    "MissingVideoError": "domain.errors",
    "NoAPIKeyError": "domain.errors",
    "Mode": "domain.catalog",
    "ModelSpec": "domain.catalog",
    "OutcomeUnknownError": "domain.errors",
    "RateLimitError": "domain.errors",
    "RequestValidationError": "domain.errors",
    "RetryPolicy": "adapters.client",
    "Settings": "config",
    "SpendingRefusedError": "domain.errors",
    "StoreError": "domain.errors",
    "StoreUnavailableError": "domain.errors",
    "Task": "domain.tasks",
    "TaskExistsError": "domain.errors",
    "TaskFailedError": "domain.errors",
    "TaskNotFoundError": "domain.errors",
    "TaskStatus": "domain.tasks",
    "TaskType": "domain.catalog",
    "Tier": "domain.catalog",
    "WaitPolicy": "adapters.client",
    "WaitTimeoutError": "domain.errors",
    "__version__": "version",
    "get_model": "domain.catalog",
    "list_models": "domain.catalog",
    "quote": "domain.rules",
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
    "KlingService",
    "MissingImageError",
    "MissingVideoError",
    "Mode",
    "ModelSpec",
    "NoAPIKeyError",
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
