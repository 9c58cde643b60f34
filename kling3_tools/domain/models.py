"""The request at the API boundary: `GenerateRequest` enforces every documented rule (its fields' own here, the
rules between them in `rules`) before anything is sent, and reports all problems at once. What the API answers
is read by `tasks`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from . import catalog
from .catalog import AspectRatio, TaskType
from .rules import built, catalog_rule_errors, shot_from_text
from .url_fields import check_url

StatusFilter = Literal["running", "succeeded", "failed", "timed_out"]  # still tracked, or how tracking ended


class MultiShot(BaseModel):
    """One shot of a native multi-shot video: what it shows, and for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    prompt: str = Field(min_length=1, max_length=catalog.MAX_SHOT_PROMPT_CHARS, description="What the shot shows.")
    duration: int = Field(ge=1, le=catalog.MAX_DURATION, strict=True, description="Its seconds.")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """A shot written as text (see `shot_from_text`)."""
        if isinstance(value, str):
            if (shot := shot_from_text(value)) is None:
                raise ValueError('a shot is written "SECONDS:PROMPT", e.g. "3:a fox runs"')
            return shot
        return value


class GenerateRequest(BaseModel):
    """The body of `POST /api/generate`, checked against the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    type: TaskType = Field(description="Task type, e.g. pro-text-to-video.")
    prompt: str | None = Field(
        default=None,
        min_length=1,
        max_length=catalog.MAX_PROMPT_CHARS,
        description=f"What the video shows (1-{catalog.MAX_PROMPT_CHARS} characters).",
    )
    source_task: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Za-z_-]{1,64}$",
        description=(
            "A finished video made here, by its task id, as the source (video-extend, lip-sync, video-edit): it "
            "stands for `video`, and for a lip-sync's `duration`."
        ),
    )
    duration: int | None = Field(
        default=None,
        ge=catalog.MIN_DURATION,
        le=catalog.MAX_DURATION,
        strict=True,
        description=(
            f"Length in seconds ({catalog.MIN_DURATION}-{catalog.MAX_DURATION}, "
            f"default {catalog.DEFAULT_DURATION}); not for edits, which keep the source video's length."
        ),
    )
    aspect_ratio: AspectRatio | None = Field(default=None, description="16:9 (default), 9:16 or 1:1.")
    image: str | None = Field(
        default=None, description="Start image (image-to-video): an http(s) URL, a local file or a data: URI."
    )
    end_image: str | None = Field(
        default=None, description="End frame image (image-to-video): an http(s) URL, a local file or a data: URI."
    )
    video: str | None = Field(
        default=None,
        description="Source video (video-edit, reference-to-video): an http(s) URL, a local file or a data: URI.",
    )
    images: list[str] | None = Field(
        default=None,
        max_length=catalog.MAX_REFERENCE_IMAGES,
        description=(
            f"Reference images (reference-to-video, at most {catalog.MAX_REFERENCE_IMAGES}): http(s) URLs, local "
            "files or data: URIs."
        ),
    )
    sound: bool | None = Field(
        default=None, description="Generate native audio (default true); not for edits (see keep_original_sound)."
    )
    negative_prompt: str | None = Field(
        default=None, max_length=catalog.MAX_PROMPT_CHARS, description="What the video should avoid."
    )
    cfg_scale: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Prompt adherence 0-1 (default 0.5); Kling 3.0 only, i.e. the types without `o3-`.",
    )
    keep_original_sound: bool | None = Field(
        default=None, description="Keep the source audio (video-edit, motion-control)."
    )
    characters: list[str] | None = Field(
        default=None,
        max_length=catalog.MAX_CHARACTERS,
        description=(
            f"Characters to place, by name (see `character list`; at most {catalog.MAX_CHARACTERS}): O3 text, "
            "image and reference types."
        ),
    )
    shots: list[MultiShot] | None = Field(
        default=None,
        min_length=catalog.MIN_SHOTS,
        max_length=catalog.MAX_SHOTS,
        description=(
            f"Native multi-shot: {catalog.MIN_SHOTS}-{catalog.MAX_SHOTS} shots cut by the model in one video, each "
            '"SECONDS:PROMPT" (or {prompt, duration}); their seconds add up to the video\'s.'
        ),
    )
    character_orientation: Literal["image", "video"] | None = Field(
        default=None,
        description=(
            "Motion control: the character faces as in the image (default; a motion video of at most "
            f"{catalog.MAX_MOTION_SECONDS_FACING_IMAGE} s) or as in the video."
        ),
    )
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=catalog.MAX_SPOKEN_CHARS,
        description=f"Lip-sync: what the speaker says (at most {catalog.MAX_SPOKEN_CHARS} characters); or `audio`.",
    )
    voice: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Za-z_.-]{1,64}$",
        description=f"Lip-sync: the voice id that speaks `text` (default {catalog.DEFAULT_VOICE}).",
    )
    audio: str | None = Field(
        default=None, description="Lip-sync: the speech, an http(s) URL or a local file (mp3, wav, m4a, aac)."
    )

    @field_validator("prompt", "text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("image", "end_image", "video", "audio")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("images")
    @classmethod
    def _urls(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_url(v) for v in value]

    @model_validator(mode="wrap")
    @classmethod
    def _check_against_catalog(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Run field checks and the per-type rules together, so every problem is reported at once."""
        rule_errors = catalog_rule_errors(data, cls.model_fields) if isinstance(data, dict) else []
        try:
            model = handler(data)
        except ValidationError as exc:
            field_errors = [
                InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx", {}))
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(cls.__name__, field_errors + rule_errors) from None
        if rule_errors:
            raise ValidationError.from_exception_data(cls.__name__, rule_errors)
        return model

    @property
    def spec(self) -> catalog.ModelSpec:
        return catalog.CATALOG[self.type]

    @property
    def effective_duration(self) -> int | None:
        """Seconds billed and generated; None for edits, which follow the source video."""
        if not self.spec.has_duration:
            return None
        if self.shots:
            return sum(shot.duration for shot in self.shots)
        return self.duration or catalog.DEFAULT_DURATION

    @property
    def effective_sound(self) -> bool:
        """With native audio: by default where the type makes sound, never where it does not take `sound`."""
        if "sound" not in self.spec.accepted_fields:
            return False
        return True if self.sound is None else self.sound

    def estimated_credits(self, prices: catalog.Prices = catalog.PRICES) -> int:
        """What this request will spend by a provider's price list (the aggregator's credits by default); no HTTP."""
        return prices[self.type].credits(self.effective_duration or 0, self.effective_sound)

    @property
    def summary(self) -> str:
        """What the video is about, in one line for a person: its prompt, its shots' or its spoken text."""
        shots = " / ".join(shot.prompt for shot in self.shots or [])
        return self.prompt or shots or (f"says: {self.text}" if self.text else str(self.type))

    def recorded(self) -> dict[str, Any]:
        """The request in the model's own form (what the store keeps): `GenerateRequest(**recorded())` again."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_payload(self) -> dict[str, Any]:
        """The JSON body sent to the API, with the documented defaults made explicit."""
        payload: dict[str, Any] = {"type": self.type.value}
        payload.update(self.model_dump(exclude={"type", "source_task"}, exclude_none=True, mode="json"))
        if self.spec.has_duration:
            payload["duration"] = self.effective_duration
            payload["aspect_ratio"] = (self.aspect_ratio or catalog.DEFAULT_ASPECT_RATIO).value
            payload["sound"] = self.effective_sound
        if "end_image" in payload:
            payload[catalog.END_FRAME_WIRE_FIELD] = payload.pop("end_image")
        return payload

    @classmethod
    def fields_of(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every request field read from `values` (parsed flags, tool arguments, a recorded request), None
        where absent. Front ends learn the fields here, so a field added to the model reaches all of them."""
        return {name: values.get(name) for name in cls.model_fields}

    @classmethod
    def value_type(cls, name: str) -> Any:
        """A field's type without its None (`int` for `int | None`), for front ends that shape an input by it."""
        annotation = cls.model_fields[name].annotation
        return next(arg for arg in (get_args(annotation) or (annotation,)) if arg is not type(None))

    @classmethod
    def build(cls, **fields: Any) -> GenerateRequest:
        """Validate `fields`; raise `RequestValidationError` listing every problem in plain words."""
        return built(cls, fields)
