"""The spending path for callers that hand in fields naming things only this machine knows (a video made here,
characters by name), and the shortcuts built on it: extend a video, lip-sync it. Mixed into `KlingService`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .adapters.assets import inputs
from .adapters.assets.inputs import CheckedRequest, LocalFiles
from .adapters.client import AsyncKlingClient
from .domain.catalog import TaskType
from .domain.ledger import SpendLimit
from .domain.models import GenerateRequest
from .domain.records import LOCAL_OWNER, AnyOrigin, TaskRecord, owner_of
from .workflows.sources import Sources


class _Service(Protocol):
    client: AsyncKlingClient
    sources: Sources

    def check(self, fields: Mapping[str, Any], files: LocalFiles = ...) -> CheckedRequest: ...

    async def prepare(self, request: CheckedRequest, files: LocalFiles = ...) -> GenerateRequest: ...

    async def submit(
        self, request: GenerateRequest, origin: AnyOrigin | None = None, *, limits: Sequence[SpendLimit] = ()
    ) -> TaskRecord: ...

    async def examine(
        self,
        fields: Mapping[str, Any],
        files: LocalFiles = ...,
        *,
        owner: str = ...,
        checked: CheckedRequest | None = None,
    ) -> CheckedRequest: ...

    async def make(
        self,
        fields: Mapping[str, Any],
        origin: AnyOrigin | None = None,
        *,
        files: LocalFiles = ...,
        limits: Sequence[SpendLimit] = (),
    ) -> TaskRecord: ...


class Making:
    async def examine(
        self: _Service,
        fields: Mapping[str, Any],
        files: LocalFiles = inputs.ANY_PATH,
        *,
        owner: str = LOCAL_OWNER,
        checked: CheckedRequest | None = None,
    ) -> CheckedRequest:
        """`check` for `owner`: a `source_task` (one of their videos) and characters (theirs, by name) made
        into what the API takes first, and what the provider does not offer refused. Nothing is uploaded,
        reserved or sent; `RequestValidationError` lists every problem. `checked`: the same fields checked
        already (before the service opened), kept when nothing needed resolving."""
        resolved = await self.sources.resolve(fields, owner)
        if checked is None or resolved != dict(fields):
            checked = self.check(resolved, files)
        self.client.provider.refuse(checked.request)
        return checked

    async def make(
        self: _Service,
        fields: Mapping[str, Any],
        origin: AnyOrigin | None = None,
        *,
        files: LocalFiles = inputs.ANY_PATH,
        limits: Sequence[SpendLimit] = (),
    ) -> TaskRecord:
        """Examine, upload and submit a request's fields as `origin`'s owner would (spends credits)."""
        checked = await self.examine(fields, files, owner=LOCAL_OWNER if origin is None else owner_of(origin))
        return await self.submit(await self.prepare(checked), origin, limits=limits)

    async def extend(
        self: _Service,
        task_id: str,
        prompt: str,
        *,
        type: TaskType | str = TaskType.O3_STD_VIDEO_EXTEND,
        duration: int | None = None,
        origin: AnyOrigin | None = None,
        limits: Sequence[SpendLimit] = (),
    ) -> TaskRecord:
        """The next shot of a finished video made here: a new task whose `source_task` is `task_id`."""
        fields = {"type": type, "prompt": prompt, "duration": duration, "source_task": task_id}
        return await self.make(fields, origin, limits=limits)

    async def lip_sync(
        self: _Service,
        task_id: str,
        *,
        text: str | None = None,
        voice: str | None = None,
        audio: str | None = None,
        origin: AnyOrigin | None = None,
        limits: Sequence[SpendLimit] = (),
    ) -> TaskRecord:
        """A finished video made here, its speaker saying `text` (in `voice`) or `audio` (a URL or a file)."""
        fields = {"type": TaskType.LIP_SYNC, "source_task": task_id, "text": text, "voice": voice, "audio": audio}
        return await self.make(fields, origin, limits=limits)
