"""What a provider is: one wire format (paths, bodies, answers, error codes), one way to authenticate, one price
list. The client sends the calls a provider spells and reads its answers through it."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import SecretStr

from ...domain.catalog import Price, TaskType
from ...domain.errors import RequestValidationError
from ...domain.models import INLINE_IMAGE, GenerateRequest, Task
from ...domain.url_fields import url_values

if TYPE_CHECKING:
    import httpx

CALLBACK_PATH = "/callbacks"  # where a process receives its provider's callbacks, under `[callbacks] public_url`


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to the API, as a provider spells it."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the settings hold to authenticate with: a Bearer key, or an access and secret key pair."""

    api_key: SecretStr | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None

    @staticmethod
    def given(value: SecretStr | None) -> bool:
        return value is not None and bool(value.get_secret_value().strip())


class Provider(ABC):
    """An API this product speaks. Subclasses set the class variables and spell the calls."""

    name: ClassVar[str]
    default_base_url: ClassVar[str]
    unit: ClassVar[str]  # what its prices count: "credits", "units"
    PRICES: ClassVar[Mapping[TaskType, Price]]  # its published prices (`[prices]` overrides any)
    finds_by_attempt_id: ClassVar[bool] = False  # a task can be looked up by the id the caller gave it
    inline_images: ClassVar[bool] = False  # takes an image in the body (base64), so a local one needs no store

    def __init__(
        self,
        credentials: Credentials,
        *,
        callback_url: str | None = None,
        prices: Mapping[TaskType, Price] | None = None,
    ) -> None:
        self.credentials = credentials
        self.callback_url = callback_url  # sent with each generate where the API calls back; None: polling only
        self.prices: Mapping[TaskType, Price] = self.PRICES if prices is None else prices  # `Settings.pricing`

    def __repr__(self) -> str:  # never the credentials
        return f"{type(self).__name__}()"

    def load_ahead(self) -> None:
        """Load what reading answers needs (the settings alone do not, to stay quick to read)."""
        importlib.import_module("kling3_tools.adapters.answers")

    @abstractmethod
    def authorization(self) -> str | None:
        """The `Authorization` header for the next request; None when no credentials were given."""

    def refuse(self, request: GenerateRequest) -> None:
        """Raise `RequestValidationError` for what this provider cannot take, before anything is reserved."""
        if not self.inline_images and any(
            isinstance(url, str) and INLINE_IMAGE.fullmatch(url) for _, _, url in url_values(request.recorded())
        ):
            where = f"{self.name} takes images by URL only"
            raise RequestValidationError(
                [f'{where}: set [storage] url, or use provider = "kling", which takes them inline']
            )

    @abstractmethod
    def generate(self, request: GenerateRequest, *, attempt_id: str | None = None) -> Call:
        """The call that creates a task (`attempt_id`: the ledger's, sent where the API keeps the caller's id)."""

    @abstractmethod
    def status(self, task_id: str, type_: TaskType | str | None = None) -> list[Call]:
        """The calls that may read a task, to try in order (more than one when its type is not known)."""

    def find(self, attempt_id: str, type_: TaskType | str) -> Call | None:
        """The call that reads a task by the attempt id it was created with; None where the API cannot."""
        return None

    @abstractmethod
    def read_task(self, response: httpx.Response) -> Task:
        """The task in an answer, or the `APIError` its error stands for."""
