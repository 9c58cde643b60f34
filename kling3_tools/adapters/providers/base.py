"""What a provider is: one wire format (paths, bodies, answers, error codes), one way to authenticate, one price
list. The client sends the calls a provider spells and reads its answers through it."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import SecretStr

from ...domain.catalog import Price, TaskType
from ...domain.characters import CharacterTask
from ...domain.errors import RequestValidationError
from ...domain.models import GenerateRequest
from ...domain.tasks import Task
from ...domain.url_fields import INLINE_IMAGE, url_values

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
    takes_fields: ClassVar[frozenset[str] | None] = None  # the request fields its format has; None: every one
    keeps_characters: ClassVar[bool] = False  # makes reusable characters (`character_calls`)

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
        problems = []
        if request.type not in self.prices:
            problems.append(f"`{request.type}` {self.elsewhere(lambda p: request.type in p.PRICES)}")
        given = set(request.recorded()) - {"type"}
        if self.takes_fields is not None and (extra := sorted(given - self.takes_fields)):
            names = ", ".join(f"`{name}`" for name in extra)
            problems.append(f"{names} {self.elsewhere(lambda p: p.takes_fields is None or given <= p.takes_fields)}")
        if not self.inline_images and any(
            isinstance(url, str) and INLINE_IMAGE.fullmatch(url) for _, _, url in url_values(request.recorded())
        ):
            problems.append(
                f'{self.name} takes images by URL only: set [storage] url, or use provider = "kling", which takes '
                "them inline"
            )
        if problems:
            raise RequestValidationError(problems)

    def elsewhere(self, offers: Callable[[type[Provider]], bool]) -> str:
        """How a refusal names the providers that offer what this one does not."""
        from . import PROVIDERS  # the registry imports this module

        others = [name for name, provider in PROVIDERS.items() if provider is not type(self) and offers(provider)]
        where = " or ".join(f'provider = "{name}"' for name in others) or "no provider here"
        return f"is not offered by provider {self.name}; set {where} (nothing was sent)"

    def character_calls(self) -> CharacterCalls:
        """How this provider makes, reads and deletes characters; `RequestValidationError` where it has none."""
        raise RequestValidationError([f"characters {self.elsewhere(lambda p: p.keeps_characters)}"])

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


class CharacterCalls(ABC):
    """A provider's calls for reusable characters: made from images (a task that ends with the character's id),
    read, deleted."""

    @abstractmethod
    def create(self, name: str, description: str, images: list[str], *, attempt_id: str) -> Call: ...

    @abstractmethod
    def status(self, task_id: str) -> Call: ...

    @abstractmethod
    def delete(self, provider_id: str) -> Call: ...

    @abstractmethod
    def read(self, response: httpx.Response) -> CharacterTask:
        """The character task in an answer, or the `APIError` its error stands for."""
