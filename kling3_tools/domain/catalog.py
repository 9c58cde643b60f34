"""The task types: what each accepts, what it requires, what the aggregator charges for it.

This module is the single source of truth for the API's models. Request
validation, cost estimates, the sandbox and every front end read it; nothing
else spells out a price or a field rule.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DEFAULT_BASE_URL = "https://kling3api.com"
MAX_RETRY_AFTER = 300.0  # a 429 never pauses anyone longer than this, whatever the header says

MIN_DURATION = 3
MAX_DURATION = 15
DEFAULT_DURATION = 5
MAX_PROMPT_CHARS = 2000
MAX_REFERENCE_IMAGES = 7
MAX_CHARACTERS = 3  # characters (Kling's elements) in one request; with reference images, at most 7 inputs in all
MIN_SHOTS, MAX_SHOTS = 2, 6  # a native multi-shot request; each shot at least 1 s, together the video's length
MAX_SHOT_PROMPT_CHARS = 512
MAX_INPUTS_WITH_VIDEO = 4  # reference images and characters beside a reference video
MAX_SPOKEN_CHARS = 120  # what a lip-sync's text may hold
DEFAULT_VOICE = "genshin_vindi2"
MAX_MOTION_SECONDS_FACING_IMAGE = 10
MAX_SOURCE_SECONDS = 10  # what extend and lip-sync take as their source video
DEFAULT_CFG_SCALE = 0.5

# The page documents an end-frame image for image-to-video but names no wire
# field for it. This is the one place that decides the name sent on the wire.
END_FRAME_WIRE_FIELD = "image_tail"


class TaskType(StrEnum):
    """A value of the API's `type` field."""

    PRO_TEXT_TO_VIDEO = "pro-text-to-video"
    PRO_IMAGE_TO_VIDEO = "pro-image-to-video"
    STD_TEXT_TO_VIDEO = "std-text-to-video"
    STD_IMAGE_TO_VIDEO = "std-image-to-video"
    O3_PRO_TEXT_TO_VIDEO = "o3-pro-text-to-video"
    O3_PRO_IMAGE_TO_VIDEO = "o3-pro-image-to-video"
    O3_PRO_REFERENCE_TO_VIDEO = "o3-pro-reference-to-video"
    O3_PRO_VIDEO_EDIT = "o3-pro-video-edit"
    O3_STD_TEXT_TO_VIDEO = "o3-std-text-to-video"
    O3_STD_IMAGE_TO_VIDEO = "o3-std-image-to-video"
    O3_STD_REFERENCE_TO_VIDEO = "o3-std-reference-to-video"
    O3_STD_VIDEO_EDIT = "o3-std-video-edit"
    O3_PRO_VIDEO_EXTEND = "o3-pro-video-extend"
    O3_STD_VIDEO_EXTEND = "o3-std-video-extend"
    PRO_MOTION_CONTROL = "pro-motion-control"
    STD_MOTION_CONTROL = "std-motion-control"
    LIP_SYNC = "lip-sync"


class AspectRatio(StrEnum):
    """Output aspect ratios the API accepts."""

    LANDSCAPE = "16:9"
    PORTRAIT = "9:16"
    SQUARE = "1:1"


DEFAULT_ASPECT_RATIO = AspectRatio.LANDSCAPE


class Family(StrEnum):
    KLING_3 = "kling-3.0"
    O3 = "kling-o3"


class Tier(StrEnum):
    PRO = "pro"
    STD = "std"


class Mode(StrEnum):
    TEXT = "text-to-video"
    IMAGE = "image-to-video"
    REFERENCE = "reference-to-video"
    EDIT = "video-edit"
    EXTEND = "video-extend"  # the next shot of a finished video
    MOTION = "motion-control"  # a character image moved as a reference video moves
    LIP_SYNC = "lip-sync"  # a finished video's speaker made to say a text or an audio track


# Request fields by the mode (or family) that takes them.
_PROMPTED = frozenset({"prompt", "negative_prompt"})
_FRESH = frozenset({"duration", "aspect_ratio", "sound"})  # a video made from nothing but the request
_MODE_FIELDS: dict[Mode, frozenset[str]] = {
    Mode.TEXT: _PROMPTED | _FRESH | {"shots"},
    Mode.IMAGE: _PROMPTED | _FRESH | {"image", "end_image", "shots"},
    Mode.REFERENCE: _PROMPTED | _FRESH | {"images", "video"},
    Mode.EDIT: _PROMPTED | {"video", "source_task", "keep_original_sound"},
    Mode.EXTEND: _PROMPTED | {"duration", "video", "source_task"},
    Mode.MOTION: _PROMPTED | {"duration", "image", "video", "character_orientation", "keep_original_sound"},
    Mode.LIP_SYNC: frozenset({"duration", "video", "source_task", "text", "voice", "audio"}),
}
# `video` may be given as a `source_task` (a video made here), which also stands for a lip-sync's `duration`.
_MODE_REQUIRED: dict[Mode, frozenset[str]] = {
    Mode.TEXT: frozenset({"prompt"}),  # or `shots`
    Mode.IMAGE: frozenset({"prompt", "image"}),
    Mode.REFERENCE: frozenset({"prompt"}),
    Mode.EDIT: frozenset({"prompt", "video"}),
    Mode.EXTEND: frozenset({"prompt", "video"}),
    Mode.MOTION: frozenset({"image", "video", "duration"}),  # `duration`: the motion video's length, billed
    Mode.LIP_SYNC: frozenset({"video", "duration"}),  # and `text` or `audio`
}
_FAMILY_FIELDS: dict[Family, frozenset[str]] = {  # for the modes that make a video from the request alone
    Family.KLING_3: frozenset({"cfg_scale"}),
    Family.O3: frozenset({"characters"}),
}
_FAMILY_MODES = frozenset({Mode.TEXT, Mode.IMAGE, Mode.REFERENCE})


@dataclass(frozen=True, slots=True)
class Price:
    """What one task costs, in its provider's unit: per second of video, or fixed for edits. A rate may be a
    fraction (Kling's units); a task's total is rounded up to a whole unit, as the ledger counts."""

    per_second: float | None = None
    per_second_with_sound: float | None = None
    fixed: int | None = None

    def credits(self, duration: int, sound: bool) -> int:
        if self.fixed is not None:
            return self.fixed
        assert self.per_second is not None
        rate = self.per_second_with_sound if sound and self.per_second_with_sound else self.per_second
        return math.ceil(round(rate * duration, 6))

    def describe(self, unit: str = "credits") -> str:
        if self.fixed is not None:
            return f"{self.fixed} {unit} fixed"
        if self.per_second_with_sound is not None:
            return f"{self.per_second:g}/s silent, {self.per_second_with_sound:g}/s with sound"
        return f"{self.per_second:g}/s"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything the project knows about one task type."""

    type: TaskType
    family: Family
    tier: Tier
    mode: Mode
    description: str
    price: Price | None  # the aggregator's; None where it does not offer the type

    @property
    def accepted_fields(self) -> frozenset[str]:
        family = _FAMILY_FIELDS[self.family] if self.mode in _FAMILY_MODES else frozenset()
        return _MODE_FIELDS[self.mode] | family

    @property
    def required_fields(self) -> frozenset[str]:
        return _MODE_REQUIRED[self.mode]

    @property
    def has_duration(self) -> bool:
        """Edits take the source video's length; every other type takes a duration."""
        return "duration" in self.accepted_fields

    @property
    def task_id_prefix(self) -> str:
        return "n75" if self.family is Family.KLING_3 else "n71"


def _spec(type_: TaskType, description: str, price: Price | None = None) -> ModelSpec:
    family = Family.O3 if type_.startswith("o3-") else Family.KLING_3
    tier = Tier.PRO if "pro-" in type_ else Tier.STD
    mode = next(m for m in Mode if type_.endswith(m.value))
    return ModelSpec(type_, family, tier, mode, description, price)


_PRO_3 = Price(per_second=54, per_second_with_sound=80)
_STD_3 = Price(per_second=40, per_second_with_sound=60)

CATALOG: dict[TaskType, ModelSpec] = {
    spec.type: spec
    for spec in (
        _spec(TaskType.PRO_TEXT_TO_VIDEO, "Kling 3.0 Pro text-to-video", _PRO_3),
        _spec(TaskType.PRO_IMAGE_TO_VIDEO, "Kling 3.0 Pro image-to-video", _PRO_3),
        _spec(TaskType.STD_TEXT_TO_VIDEO, "Kling 3.0 Standard text-to-video", _STD_3),
        _spec(TaskType.STD_IMAGE_TO_VIDEO, "Kling 3.0 Standard image-to-video", _STD_3),
        _spec(TaskType.O3_PRO_TEXT_TO_VIDEO, "O3 Pro text-to-video", Price(per_second=48)),
        _spec(TaskType.O3_PRO_IMAGE_TO_VIDEO, "O3 Pro image-to-video", Price(per_second=48)),
        _spec(
            TaskType.O3_PRO_REFERENCE_TO_VIDEO,
            "O3 Pro with reference images/video",
            Price(per_second=72),
        ),
        _spec(TaskType.O3_PRO_VIDEO_EDIT, "O3 Pro video editing", Price(fixed=435)),
        _spec(TaskType.O3_STD_TEXT_TO_VIDEO, "O3 Standard text-to-video", Price(per_second=36)),
        _spec(TaskType.O3_STD_IMAGE_TO_VIDEO, "O3 Standard image-to-video", Price(per_second=36)),
        _spec(
            TaskType.O3_STD_REFERENCE_TO_VIDEO,
            "O3 Standard reference-to-video",
            Price(per_second=20),
        ),
        _spec(TaskType.O3_STD_VIDEO_EDIT, "O3 Standard video editing", Price(fixed=360)),
        _spec(TaskType.O3_PRO_VIDEO_EXTEND, "O3 Pro: the next shot of a finished video"),
        _spec(TaskType.O3_STD_VIDEO_EXTEND, "O3 Standard: the next shot of a finished video"),
        _spec(TaskType.PRO_MOTION_CONTROL, "Kling 3.0 Pro motion control: an image moved as a video moves"),
        _spec(TaskType.STD_MOTION_CONTROL, "Kling 3.0 Standard motion control"),
        _spec(TaskType.LIP_SYNC, "Lip-sync a finished video to a text or an audio track"),
    )
}


Prices = Mapping[TaskType, Price]  # one provider's price list (`adapters.providers`): the types it offers
PRICES: Prices = {type_: spec.price for type_, spec in CATALOG.items() if spec.price}  # the aggregator's, in credits


def get_model(type_: TaskType | str) -> ModelSpec:
    """The spec of a task type; raises `KeyError` naming the known types."""
    try:
        return CATALOG[TaskType(type_)]
    except ValueError:
        known = ", ".join(CATALOG)
        raise KeyError(f"unknown task type {type_!r}; known types: {known}") from None


def list_models(prices: Prices | None = None) -> list[ModelSpec]:
    """The specs a provider offers (by its price list; every one without), Kling 3.0 first, in the page's
    order."""
    return [spec for spec in CATALOG.values() if prices is None or spec.type in prices]


def describe_models(
    prices: Prices | None = None, unit: str = "credits", takes: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """The types a provider offers, as plain JSON data priced by its list (the aggregator's by default) with the
    fields its format has (`takes`; None: every one), for `kling3 models --json` and the MCP `kling://models`
    resource."""
    prices = PRICES if prices is None else prices
    return [
        {
            "type": spec.type.value,
            "family": spec.family.value,
            "tier": spec.tier.value,
            "mode": spec.mode.value,
            "description": spec.description,
            "duration": [MIN_DURATION, MAX_DURATION] if spec.has_duration else "source video",
            "price": prices[spec.type].describe(unit),
            "credits_default": prices[spec.type].credits(DEFAULT_DURATION, True),
            "fields": sorted(f for f in spec.accepted_fields if takes is None or f in takes or f == "type"),
            "required": sorted(spec.required_fields),
        }
        for spec in list_models(prices)
    ]
