"""Kling 3.0 and Kling Video O3 video generation: typed core, sandbox, CLI."""

__version__ = "0.1.0"

from .catalog import AspectRatio, Family, Mode, ModelSpec, TaskType, Tier, get_model, list_models
from .client import AsyncKlingClient, KlingClient, RetryPolicy, WaitPolicy
from .config import Settings
from .errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
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
    TaskFailedError,
    TaskNotFoundError,
    WaitTimeoutError,
)
from .models import GenerateRequest, Task, TaskStatus, quote

__all__ = [
    "APIConnectionError",
    "APIError",
    "AspectRatio",
    "AsyncKlingClient",
    "AuthenticationError",
    "BadRequestError",
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
    "Task",
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
