"""Characters: a person or creature made once from a few images and placed in later videos by name (Kling's
"elements"). Each belongs to its owner (the local user, an MCP identity, a Discord member) and is kept in the
store with the provider's id for it."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .rules import built
from .tasks import TaskStatus, normalise_status
from .url_fields import check_url

MAX_NAME_CHARS = 20  # Kling's `element_name`
MAX_DESCRIPTION_CHARS = 100  # Kling's `element_description`
MIN_IMAGES, MAX_IMAGES = 2, 4  # a frontal image and one to three more


class NewCharacter(BaseModel):
    """What making a character takes, checked before anything is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _-]*$",
        description=f"How videos name it (at most {MAX_NAME_CHARS} letters, digits, spaces, - and _).",
    )
    images: list[str] = Field(
        min_length=MIN_IMAGES,
        max_length=MAX_IMAGES,
        description=f"{MIN_IMAGES}-{MAX_IMAGES} images of it, the first from the front: URLs, files or data: URIs.",
    )
    description: str = Field(
        default="", max_length=MAX_DESCRIPTION_CHARS, description="What it is, in a few words (optional)."
    )

    @field_validator("images")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [check_url(v) for v in value]

    @classmethod
    def build(cls, **fields: object) -> NewCharacter:
        return built(cls, fields)


class Character(BaseModel):
    """A character as the store keeps it."""

    model_config = ConfigDict(defer_build=True)

    owner: str
    name: str
    provider: str  # the API that made it: its id means nothing to another
    provider_id: str
    description: str = ""
    images: list[str] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)


class CharacterTask(BaseModel):
    """A provider's answer about the making of a character."""

    model_config = ConfigDict(defer_build=True)

    task_id: str
    raw_status: str = ""
    provider_id: str | None = None
    error_message: str | None = None

    @property
    def status(self) -> TaskStatus:
        return normalise_status(self.raw_status)
