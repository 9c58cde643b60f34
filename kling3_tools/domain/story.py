"""A story: many shots, each one request, chained by reference, cut into one film.

The file is TOML (the same schema as JSON for MCP and Python). Top-level request fields are defaults for
every shot; each `[[shots]]` is one request with an `id`; a URL field may name another shot: `"@storm"` is
that shot's video, `"@storm.last_frame"` and `"@storm.first_frame"` a still from it. `[cut]` picks and
orders the shots of the film (default: every shot, in file order) and the transition between them.

`mode = "native"` sends the shots instead as native multi-shot requests: each request holds up to the model's
limit of shots (6, and 15 s in all), cut by the model itself; its shots take only `prompt` and `duration`. The
default, `"stitched"`, runs one request per shot and cuts the film here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import catalog
from .errors import RequestValidationError
from .models import GenerateRequest
from .rules import describe_validation_error
from .url_fields import url_values

REFERENCE = re.compile(r"^@(?P<shot>[A-Za-z0-9_-]+)(?:\.(?P<still>last_frame|first_frame))?$")
STORY_KEYS = {"title", "shots", "cut", "mode"}
NATIVE_SHOT_SECONDS = 3  # a native shot's length when it gives none
MAX_SHOTS = 50  # a story is reserved whole: a bound on what one file can hold and spend
MAX_TITLE = 200
MAX_CUT = 200


class Cut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shots: list[str] | None = Field(default=None, description="The shots of the film, in order (default: all).")
    transition: Literal["cut", "crossfade"] = "cut"


class Shot(BaseModel):
    """One request of the story: its own request fields (the story's defaults are applied by `Story.fields`)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    fields: dict[str, Any]


class Reference(BaseModel):
    """Where one shot's input comes from: another shot's video, or a still of it."""

    shot: str
    still: Literal["last_frame", "first_frame"] | None = None

    @classmethod
    def parse(cls, value: Any) -> Reference | None:
        match = REFERENCE.match(value) if isinstance(value, str) else None
        return None if match is None else cls(shot=match["shot"], still=match["still"])

    def __str__(self) -> str:
        return f"@{self.shot}" + (f".{self.still}" if self.still else "")


class Story(BaseModel):
    title: str = ""
    mode: Literal["stitched", "native"] = "stitched"
    defaults: dict[str, Any] = Field(default_factory=dict)
    shots: list[Shot]
    cut: Cut = Field(default_factory=Cut)

    @classmethod
    def from_toml(cls, path: str | Path) -> Story:
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise RequestValidationError([f"cannot read {path}: {exc.strerror or exc}"]) from None
        return cls.from_text(text, name=str(path))

    @classmethod
    def from_text(cls, text: bytes | str, *, name: str = "the story") -> Story:
        """The story from TOML text (a file's bytes, an upload)."""
        try:
            data = tomllib.loads(text.decode() if isinstance(text, bytes) else text)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RequestValidationError([f"{name} is not valid TOML: {exc}"]) from None
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Story:
        """The story from its TOML or JSON form; `RequestValidationError` lists every key it does not know."""
        problems = []
        defaults = {key: value for key, value in data.items() if key not in STORY_KEYS}
        unknown = sorted(set(defaults) - set(GenerateRequest.model_fields))
        problems += [
            f"`{key}` is neither a story key ({', '.join(sorted(STORY_KEYS))}) nor a request field" for key in unknown
        ]
        raw_shots = data.get("shots")
        if not isinstance(raw_shots, list) or not raw_shots:
            problems.append("a story needs at least one [[shots]] entry")
            raw_shots = []
        # Bounds of what one story may hold, checked here rather than on the model: a story recorded before a
        # bound changed must still be readable from the store.
        if len(raw_shots) > MAX_SHOTS:
            problems.append(f"`shots`: at most {MAX_SHOTS} shots in one story (got {len(raw_shots)})")
        if len(str(data.get("title", ""))) > MAX_TITLE:
            problems.append(f"`title`: at most {MAX_TITLE} characters")
        film = data.get("cut", {}).get("shots") if isinstance(data.get("cut"), dict) else None
        if isinstance(film, list) and len(film) > MAX_CUT:
            problems.append(f"`cut.shots`: at most {MAX_CUT} entries")
        shots = []
        for number, raw in enumerate(raw_shots, start=1):
            if not isinstance(raw, dict):
                problems.append(f"shot {number} is not a table")
                continue
            own = {key: value for key, value in raw.items() if key != "id"}
            wrong = sorted(set(own) - set(GenerateRequest.model_fields))
            label = raw.get("id", number)
            problems += [f"shot `{label}`: `{key}` is not a request field" for key in wrong]
            shots.append({"id": raw.get("id", ""), "fields": own})
        try:
            story = cls.model_validate(
                {"title": data.get("title", ""), "defaults": defaults, "shots": shots, "cut": data.get("cut", {})}
                | ({"mode": data["mode"]} if "mode" in data else {})
            )
        except ValidationError as exc:
            problems += describe_validation_error(exc)
            raise RequestValidationError(problems) from None
        if problems:
            raise RequestValidationError(problems)
        return story.natively_grouped() if story.mode == "native" else story

    def natively_grouped(self) -> Story:
        """The story with its shots gathered into native multi-shot requests, in order, each as many shots as
        fit the model's limits; a request is named after its first shot."""
        problems = [f"shot `{s.id}`: a native shot takes only `prompt` and `duration`" for s in self.shots
                    if set(s.fields) - {"prompt", "duration"}]  # fmt: skip
        if self.cut.shots is not None:
            problems.append("[cut] shots: a native story's film is its shots in order; leave it out")
        problems += [
            f"shot `{s.id}`: `duration` must be whole seconds, 1-{catalog.MAX_DURATION} (got {_seconds(s)!r})"
            for s in self.shots
            if not isinstance(_seconds(s), int)
            or isinstance(_seconds(s), bool)
            or not 1 <= _seconds(s) <= catalog.MAX_DURATION
        ]
        if problems:
            raise RequestValidationError(problems)
        groups: list[list[Shot]] = []
        for shot in self.shots:
            seconds = sum(_seconds(s) for s in groups[-1]) if groups else 0
            if groups and len(groups[-1]) < catalog.MAX_SHOTS and seconds + _seconds(shot) <= catalog.MAX_DURATION:
                groups[-1].append(shot)
            else:
                groups.append([shot])
        requests = []
        for group in groups:
            if len(group) == 1:  # alone in its request: an ordinary shot
                requests.append(Shot(id=group[0].id, fields={**group[0].fields, "duration": _seconds(group[0])}))
            else:
                shots = [{"prompt": s.fields.get("prompt"), "duration": _seconds(s)} for s in group]
                requests.append(Shot(id=group[0].id, fields={"shots": shots}))
        return self.model_copy(update={"shots": requests})

    def shot(self, shot_id: str) -> Shot:
        return next(shot for shot in self.shots if shot.id == shot_id)

    def fields(self, shot: Shot) -> dict[str, Any]:
        """A shot's request fields: its own, and the story's defaults for the fields its type takes (a default
        `aspect_ratio` does not reach an edit, which keeps its source's)."""
        type_ = shot.fields.get("type", self.defaults.get("type"))
        try:
            takes = catalog.get_model(str(type_)).accepted_fields | {"type"}
        except KeyError:
            takes = frozenset(self.defaults)  # an unknown type: the request's own check names it
        return {**{k: v for k, v in self.defaults.items() if k in takes}, **shot.fields}

    def references(self, shot: Shot) -> list[tuple[str, int | None, Reference]]:
        """Each reference in a shot's URL fields: (field, index in `images` or None, reference)."""
        values = url_values(self.fields(shot))
        return [(field, index, reference) for field, index, item in values if (reference := Reference.parse(item))]

    @property
    def film(self) -> list[str]:
        """The shots of the film, in order."""
        return self.cut.shots if self.cut.shots is not None else [shot.id for shot in self.shots]


def _seconds(shot: Shot) -> Any:
    return shot.fields.get("duration", NATIVE_SHOT_SECONDS)
