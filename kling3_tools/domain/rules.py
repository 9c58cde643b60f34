"""The rules between a request's fields, by its type (from the catalog) and by Kling's documented limits, and the
one wording of every problem they find. No model here: `models` runs them inside its own validation."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from . import catalog
from .catalog import TaskType
from .errors import RequestValidationError

Model = TypeVar("Model", bound=BaseModel)


def rule(field: str, message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("kling_rule", message), loc=(field,), input=value)


def catalog_rule_errors(data: dict[str, Any], fields: Collection[str]) -> list[InitErrorDetails]:
    """Every problem of a request's fields by its type's rules (`fields`: the request model's)."""
    try:
        spec = catalog.get_model(data.get("type", ""))
    except KeyError:
        return []  # the field check reports the bad type
    given = {name for name, value in data.items() if value is not None}
    if "source_task" in given:  # it stands for the video it made (and, for a lip-sync, its length)
        given |= {"video", "duration"} if spec.mode is catalog.Mode.LIP_SYNC else {"video"}
    if spec.mode is catalog.Mode.TEXT and "shots" in given:
        given.add("prompt")  # each shot has its own
    errors = [rule(name, f"{spec.type} requires `{name}`", None) for name in sorted(spec.required_fields - given)]
    for name in sorted(given - spec.accepted_fields - {"type"}):
        if name in fields and name in data:
            errors.append(rule(name, f"{spec.type} does not take `{name}`; {_who_takes(name)}", data[name]))
    if spec.mode is catalog.Mode.REFERENCE and not (data.get("images") or data.get("video")):
        errors.append(rule("images", f"{spec.type} needs reference `images` or a reference `video`", None))
    return errors + _combination_errors(spec, data, given)


def _combination_errors(spec: catalog.ModelSpec, data: dict[str, Any], given: set[str]) -> list[InitErrorDetails]:
    """The rules between fields (Kling's documented limits), each checked only when its fields are known."""
    errors = []
    if spec.mode is catalog.Mode.LIP_SYNC and ("text" in given) == ("audio" in given):
        errors.append(rule("text", "lip-sync takes either `text` (with an optional `voice`) or `audio`", None))
    if "voice" in given and "audio" in given:
        errors.append(rule("voice", "`voice` speaks `text`; it does not go with `audio`", data["voice"]))
    shots, duration = data.get("shots"), data.get("duration")
    if isinstance(shots, list) and "end_image" in given:
        errors.append(rule("shots", "native multi-shot takes a start image, not an `end_image`", None))
    seconds = [_shot_seconds(shot) for shot in shots or []] if isinstance(shots, list) else []
    if shots and all(isinstance(s, int) for s in seconds):
        total = sum(seconds)
        if not catalog.MIN_DURATION <= total <= catalog.MAX_DURATION:
            errors.append(rule("shots", f"the shots last {total} s in all; a video is {_seconds_range()}", None))
        elif isinstance(duration, int) and duration != total:
            errors.append(rule("duration", f"`duration` is {duration} but the shots add up to {total} s", duration))
    images, characters = data.get("images") or [], data.get("characters") or []
    inputs = (len(images) if isinstance(images, list) else 0) + (len(characters) if isinstance(characters, list) else 0)
    most = catalog.MAX_INPUTS_WITH_VIDEO if data.get("video") else catalog.MAX_REFERENCE_IMAGES
    if inputs > most:
        what = "reference images and characters together are" if characters else "reference images are"
        beside = " beside a reference video" if data.get("video") else ""
        errors.append(rule("characters" if characters else "images", f"{what} at most {most}{beside}", None))
    most_source = catalog.MAX_SOURCE_SECONDS
    if spec.mode is catalog.Mode.LIP_SYNC and isinstance(duration, int) and duration > most_source:
        errors.append(rule("duration", f"a lip-sync's video is at most {most_source} s (got {duration})", duration))
    facing_image = data.get("character_orientation", "image") in (None, "image")
    most_motion = catalog.MAX_MOTION_SECONDS_FACING_IMAGE
    if spec.mode is catalog.Mode.MOTION and facing_image and isinstance(duration, int) and duration > most_motion:
        errors.append(
            rule("duration", f"a motion video facing the image is at most {most_motion} s (got {duration}); "
                  'set character_orientation = "video" for longer', duration)
        )  # fmt: skip
    return errors


def unresolved(request: Any) -> list[str]:
    """What a request still names that only this machine knows: a `source_task` not yet found as its video
    (`KlingService.make` and `examine` find it; a request built by hand must give `video`)."""
    if request.source_task and not request.video:
        return [f"`source_task` {request.source_task} was not looked up: give `video`, or submit through make()"]
    return []


def _seconds_range() -> str:
    return f"{catalog.MIN_DURATION}-{catalog.MAX_DURATION} s"


def _who_takes(field: str) -> str:
    takers = [spec for spec in catalog.CATALOG.values() if field in spec.accepted_fields]
    if not takers:
        return "no task type takes it"
    families = {spec.family for spec in takers}
    if families == {catalog.Family.KLING_3}:
        return "only Kling 3.0 types take it"
    family = "O3 " if families == {catalog.Family.O3} else ""
    modes = sorted({spec.mode.value for spec in takers})
    return f"only {family}{', '.join(modes[:-1])}{' and ' if len(modes) > 1 else ''}{modes[-1]} types take it"


def shot_from_text(text: str) -> dict[str, Any] | None:
    """`"3:a fox runs"` (a flag's or an option's text) as {duration: 3, prompt: "a fox runs"}; None when it is
    not written so."""
    seconds, colon, prompt = text.partition(":")
    if not colon or not seconds.strip().isdigit():
        return None
    return {"duration": int(seconds), "prompt": prompt.strip()}


def _shot_seconds(shot: Any) -> Any:
    """A shot's seconds as given: {duration: …}, a parsed shot, or the "SECONDS:PROMPT" text."""
    if isinstance(shot, str):
        return (shot_from_text(shot) or {}).get("duration")
    return shot.get("duration") if isinstance(shot, dict) else getattr(shot, "duration", None)


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


def built(model: type[Model], fields: Mapping[str, object]) -> Model:
    """`model` from the `fields` given (None: not given), or `RequestValidationError` listing every problem in
    plain words."""
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise RequestValidationError(describe_validation_error(exc)) from None


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
    if spec.type not in prices:
        raise RequestValidationError([f"`{spec.type}` is not offered by the configured provider (see its models)"])
    if duration is not None and not spec.has_duration:
        raise RequestValidationError([f"{spec.type} does not take `duration`; edits keep the source video's length"])
    if duration is not None and not catalog.MIN_DURATION <= duration <= catalog.MAX_DURATION:
        raise RequestValidationError([duration_problem(duration)])
    return prices[spec.type].credits(duration or catalog.DEFAULT_DURATION, True if sound is None else sound)
