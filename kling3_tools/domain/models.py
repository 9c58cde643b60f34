"""Typed requests and responses at the API boundary.

`GenerateRequest` enforces every documented rule before anything is sent and
reports all problems at once. `Task` reads what the API answers and tolerates
what a real server may add: unknown fields are kept, unknown status words are
mapped onto four states instead of failing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Self, get_args

from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from . import catalog
from .catalog import AspectRatio, TaskType
from .errors import RequestValidationError

StatusFilter = Literal["running", "succeeded", "failed", "timed_out"]  # still tracked, or how tracking ended


class TaskStatus(StrEnum):
    """The four states every status word of the API is mapped to."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


# The page shows IN_PROGRESS and SUCCESS; the rest are words that similar APIs
# send. Anything else counts as running, so an unknown word never ends a wait.
_STATUS_WORDS: dict[TaskStatus, frozenset[str]] = {
    TaskStatus.QUEUED: frozenset({"PENDING", "QUEUED", "QUEUING", "SUBMITTED", "CREATED", "WAITING"}),
    TaskStatus.RUNNING: frozenset({"IN_PROGRESS", "PROCESSING", "RUNNING", "GENERATING", "STARTED"}),
    TaskStatus.SUCCEEDED: frozenset(
        {"SUCCESS", "SUCCEED", "SUCCEEDED", "SUCCESSFUL", "COMPLETED", "COMPLETE", "DONE", "FINISHED"}
    ),
    TaskStatus.FAILED: frozenset(
        {"FAILED", "FAILURE", "FAIL", "ERROR", "EXPIRED", "CANCELLED", "CANCELED", "TIMEOUT", "TIMED_OUT", "REJECTED"}
    ),
}


def normalise_status(word: str | None) -> TaskStatus:
    """Map any status word of the API onto a `TaskStatus`."""
    key = (word or "").strip().upper().replace("-", "_").replace(" ", "_")
    for status, words in _STATUS_WORDS.items():
        if key in words:
            return status
    return TaskStatus.RUNNING


INLINE_IMAGE = re.compile(r"data:image/(png|jpeg|webp);base64,[A-Za-z0-9+/=]+")


def _check_url(value: str) -> str:
    if INLINE_IMAGE.fullmatch(value):
        return value  # an image sent inline, for a provider that takes them (see `Provider.refuse`)
    url = AnyUrl(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http(s) URL")
    return value


def _rule(field: str, message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("kling_rule", message), loc=(field,), input=value)


class GenerateRequest(BaseModel):
    """The body of `POST /api/generate`, checked against the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    type: TaskType = Field(description="Task type, e.g. pro-text-to-video.")
    prompt: str = Field(
        min_length=1,
        max_length=catalog.MAX_PROMPT_CHARS,
        description=f"What the video shows (1-{catalog.MAX_PROMPT_CHARS} characters).",
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
    keep_original_sound: bool | None = Field(default=None, description="Keep the source audio (video-edit).")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("image", "end_image", "video")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @field_validator("images")
    @classmethod
    def _urls(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_check_url(v) for v in value]

    @model_validator(mode="wrap")
    @classmethod
    def _check_against_catalog(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Run field checks and the per-type rules together, so every problem is reported at once."""
        rule_errors = _catalog_rule_errors(data) if isinstance(data, dict) else []
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
        return self.duration or catalog.DEFAULT_DURATION

    @property
    def effective_sound(self) -> bool:
        return True if self.sound is None else self.sound

    def estimated_credits(self, prices: catalog.Prices = catalog.PRICES) -> int:
        """What this request will spend by a provider's price list (the aggregator's credits by default); no HTTP."""
        return prices[self.type].credits(self.effective_duration or 0, self.effective_sound)

    def recorded(self) -> dict[str, Any]:
        """The request in the model's own form (what the store keeps): `GenerateRequest(**recorded())` again."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_payload(self) -> dict[str, Any]:
        """The JSON body sent to the API, with the documented defaults made explicit."""
        payload: dict[str, Any] = {"type": self.type.value}
        payload.update(self.model_dump(exclude={"type"}, exclude_none=True, mode="json"))
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
        try:
            return cls.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            raise RequestValidationError(describe_validation_error(exc)) from None


def _catalog_rule_errors(data: dict[str, Any]) -> list[InitErrorDetails]:
    try:
        spec = catalog.get_model(data.get("type", ""))
    except KeyError:
        return []  # the field check reports the bad type
    given = {name for name, value in data.items() if value is not None}
    errors = [
        _rule(name, f"{spec.type} requires `{name}`", None)
        for name in sorted(spec.required_fields - given)
        if name != "prompt"  # a missing prompt is already reported by its field check
    ]
    for name in sorted(given - spec.accepted_fields - {"type"}):
        if name in GenerateRequest.model_fields:
            errors.append(_rule(name, f"{spec.type} does not take `{name}`; {_who_takes(name)}", data[name]))
    if spec.mode is catalog.Mode.REFERENCE and not (data.get("images") or data.get("video")):
        errors.append(_rule("images", f"{spec.type} needs reference `images` or a reference `video`", None))
    return errors


def _who_takes(field: str) -> str:
    takers = [spec for spec in catalog.CATALOG.values() if field in spec.accepted_fields]
    if not takers:
        return "no task type takes it"
    if {spec.family for spec in takers} == {catalog.Family.KLING_3}:
        return "only Kling 3.0 types take it"
    modes = sorted({spec.mode.value for spec in takers})
    return f"only {', '.join(modes[:-1])}{' and ' if len(modes) > 1 else ''}{modes[-1]} types take it"


def duration_problem(value: object) -> str:
    """The one wording of a bad duration, whichever check finds it."""
    return f"`duration` must be {catalog.MIN_DURATION}-{catalog.MAX_DURATION} seconds (got {value!r})"


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One plain sentence per problem, naming the field."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "request"
        if field == "duration" and error["type"] != "kling_rule":
            problems.append(duration_problem(error["input"]))
        elif error["type"] == "kling_rule":
            problems.append(error["msg"])
        elif error["type"] == "extra_forbidden":
            problems.append(f"`{field}` is not a field of the Kling API")
        elif error["type"] == "missing":
            problems.append(f"`{field}` is required")
        else:
            message = error["msg"].removeprefix("Value error, ")
            shown = repr(error["input"])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            problems.append(f"`{field}`: {message[0].lower()}{message[1:]} (got {shown})")
    return problems


class Task(BaseModel):
    """One task as the API describes it (`data` of generate and status answers)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    task_id: str
    raw_status: str = Field(default="", alias="status")
    consumed_credits: int | None = None
    created_at: datetime | None = None
    type: str | None = None
    request: dict[str, Any] | None = None
    video_urls: list[str] = Field(default_factory=list, alias="response")
    error_message: str | None = None

    @field_validator("consumed_credits", mode="before")
    @classmethod
    def _no_negative_credits(cls, value: Any) -> Any:
        """A negative figure is not a charge we can believe: treat it as not given."""
        return None if isinstance(value, int | float) and value < 0 else value

    @field_validator("video_urls", mode="before")
    @classmethod
    def _urls_from_any_shape(cls, value: Any) -> list[str]:
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        urls = []
        for item in items:
            if isinstance(item, str):
                urls.append(item)
            elif isinstance(item, dict) and isinstance(item.get("url"), str):
                urls.append(item["url"])
        return urls

    @field_validator("raw_status", mode="before")
    @classmethod
    def _status_text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @property
    def status(self) -> TaskStatus:
        return normalise_status(self.raw_status)

    @property
    def video_url(self) -> str | None:
        return self.video_urls[0] if self.video_urls else None


def quote(
    type_: TaskType | str,
    duration: int | None = None,
    sound: bool | None = None,
    prices: catalog.Prices = catalog.PRICES,
) -> int:
    """The price of a type, duration and sound choice, checked like a request but needing no prompt."""
    try:
        spec = catalog.get_model(type_)
    except KeyError as exc:
        raise RequestValidationError([str(exc.args[0])]) from None
    if duration is not None and not spec.has_duration:
        raise RequestValidationError([f"{spec.type} does not take `duration`; edits keep the source video's length"])
    if duration is not None and not catalog.MIN_DURATION <= duration <= catalog.MAX_DURATION:
        raise RequestValidationError([duration_problem(duration)])
    return prices[spec.type].credits(duration or catalog.DEFAULT_DURATION, True if sound is None else sound)
