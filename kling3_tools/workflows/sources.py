"""What a request names that only this machine knows, made into what the API takes: a `source_task` (a video
made here) into its video's URL (and, for a lip-sync, its length), and characters by name into the provider's
ids. Done before the request is checked and priced, for the one who asks (their own tasks and characters)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..adapters.store import TaskStore
from ..domain import catalog
from ..domain.characters import Character
from ..domain.errors import RequestValidationError
from ..domain.records import Outcome, TaskRecord, may_use
from ..domain.story import Story
from .videos import Videos


class Sources:
    def __init__(
        self,
        store: TaskStore,
        videos: Videos,
        get: Callable[[str], Awaitable[TaskRecord | None]],
        *,
        provider: str,
    ) -> None:
        self.store, self.videos, self.provider = store, videos, provider
        self.get = get  # a task's record with URLs this process can reach (the embedded sandbox's port is new)

    async def resolve(
        self, fields: Mapping[str, Any], owner: str, *, mine: list[Character] | None = None
    ) -> dict[str, Any]:
        """`fields` with the source task's video and the characters' ids filled in (`mine`: the owner's
        characters, when already read); `RequestValidationError` lists every name that cannot be (not found, not
        the asker's, not finished, gone)."""
        resolved, problems = dict(fields), []
        if source := fields.get("source_task"):
            problems += await self._source(resolved, str(source), owner)
        if names := fields.get("characters"):
            mine = await self._mine(owner) if mine is None else mine
            ids, unknown = _ids(names if isinstance(names, list) else [names], mine)
            resolved["characters"] = ids
            problems += [
                f"`characters`: you have no character named {name!r} (see `character list`)" for name in unknown
            ]
        if problems:
            raise RequestValidationError(problems)
        return resolved

    async def story(self, story: Story, owner: str) -> Story:
        """`story` with what its shots (and defaults) name found for `owner`, as `resolve` does for one request;
        every problem of every shot at once."""
        problems: list[str] = []
        named = any(fields.get("characters") for fields in [story.defaults, *(shot.fields for shot in story.shots)])
        mine = await self._mine(owner) if named else []  # read once for the whole story

        async def resolved(fields: dict[str, Any], where: str, type_: Any) -> dict[str, Any]:
            try:
                found = await self.resolve({**fields, "type": type_}, owner, mine=mine)
            except RequestValidationError as exc:
                problems.extend(f"{where}: {problem}" for problem in exc.problems)
                return fields
            return found if "type" in fields else {k: v for k, v in found.items() if k != "type"}

        defaults = await resolved(story.defaults, "the story", story.defaults.get("type"))
        shots = [
            shot.model_copy(
                update={"fields": await resolved(shot.fields, f"shot `{shot.id}`", story.fields(shot).get("type"))}
            )
            for shot in story.shots
        ]
        if problems:
            raise RequestValidationError(problems)
        return story.model_copy(update={"defaults": defaults, "shots": shots})

    async def _source(self, fields: dict[str, Any], task_id: str, owner: str) -> list[str]:
        record = await self.get(task_id)
        if record is None or not may_use(owner, record):
            return [f"`source_task`: {task_id[:64]!r} is not one of your videos"]
        if record.outcome is not Outcome.SUCCEEDED:
            return [f"`source_task`: {task_id} has not made a video ({record.display_status})"]
        url = await self.videos.lasting_url(record)
        if url is None:
            return [f"`source_task`: the video of {task_id} is gone (Kling keeps videos about 30 days)"]
        try:
            mode = catalog.get_model(str(fields.get("type"))).mode
        except KeyError:
            mode = None  # the request's own check names the type
        seconds = record.duration
        if mode in (catalog.Mode.EXTEND, catalog.Mode.LIP_SYNC) and seconds and seconds > catalog.MAX_SOURCE_SECONDS:
            return [f"`source_task`: {task_id} lasts {seconds} s; {mode} takes at most {catalog.MAX_SOURCE_SECONDS} s"]
        fields["video"] = url
        if mode is catalog.Mode.LIP_SYNC:  # billed by the source's length, which only the record knows
            given = fields.get("duration")
            if seconds is None and given is None:
                return [f"`source_task`: the length of {task_id} is not known here; give its `duration`"]
            if seconds is not None and given is not None and given != seconds:
                return [f"`duration`: {task_id} lasts {seconds} s, which is what a lip-sync of it is billed"]
            fields["duration"] = seconds if seconds is not None else given
        return []

    async def _mine(self, owner: str) -> list[Character]:
        """The owner's characters this provider made (another's ids mean nothing to it)."""
        return [c for c in await self.store.characters(owner) if c.provider == self.provider]


def _ids(names: list[Any], mine: list[Character]) -> tuple[list[str], list[str]]:
    """The provider ids of `names` (a name, or an id already resolved) among `mine`; and the names not found."""
    by_name = {c.name.lower(): c.provider_id for c in mine}
    ids = {c.provider_id for c in mine}
    found, unknown = [], []
    for name in names:
        text = str(name)
        if text in ids:
            found.append(text)
        elif text.lower() in by_name:
            found.append(by_name[text.lower()])
        else:
            unknown.append(text[:40])
    return found, unknown
