"""Finished videos onto this machine, by the rules of `downloads` (addresses, redirects, size cap): a download
noted on its task, a copy kept where an API's URLs die with the process, a video in memory to attach."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import httpx

from ..adapters import downloads
from ..adapters.assets.store import AssetStore
from ..adapters.client import AsyncKlingClient
from ..adapters.store import TaskStore
from ..domain.records import TaskRecord
from ..domain.tasks import Task

log = logging.getLogger("kling3_tools")


class Videos:
    def __init__(
        self,
        client: AsyncKlingClient,
        store: TaskStore,
        http: httpx.AsyncClient,
        assets: AssetStore | None,
        *,
        keep_in: Path | None,
        max_bytes: int,
    ) -> None:
        self.client = client
        self.store = store
        self.http = http
        self.assets = assets
        self.keep_in = keep_in  # where copies are kept, for an API whose URLs die with the process
        self.max_bytes = max_bytes

    @property
    def urls_last(self) -> bool:
        """Whether the API's video URLs outlive this process (not the embedded sandbox's)."""
        return self.keep_in is None

    async def download(self, task: Task, path: str | Path) -> Path:
        """The task's video saved to `path` (a file, or a folder for `<task id>.mp4`), and noted as the task's
        `local_path` when it is tracked here."""
        saved = await self.client.download(task, path, max_bytes=self.max_bytes)
        try:
            await self.store.set_local_path(task.task_id, str(saved.resolve()))
        except Exception as exc:  # the file is saved: a store that cannot note it costs only the listing
            log.warning("%s was saved to %s, but the task store could not note it (%s)", task.task_id, saved, exc)
        return saved

    async def keep(self, task: Task) -> Path | None:
        """Where a finished video lasts, for an API whose URLs die with this process (the embedded sandbox):
        a copy saved once. None for any other API, whose URLs are what to hand out."""
        if self.keep_in is None or task.video_url is None:
            return None
        kept = downloads.target_in(self.keep_in, task.task_id)
        if kept.exists():
            return kept
        self.keep_in.mkdir(parents=True, exist_ok=True)
        return await self.download(task, kept)

    async def to_memory(self, url: str, *, max_bytes: int) -> bytes:
        return await downloads.to_memory(self.http, url, policy=self.client.url_policy, max_bytes=max_bytes)

    async def to_file(self, url: str, target: Path) -> Path:
        return await downloads.to_file(self.http, url, target, policy=self.client.url_policy, max_bytes=self.max_bytes)

    async def lasting_url(self, record: TaskRecord) -> str | None:
        """The URL to hand out now: the archived copy's, signed afresh, when there is one."""
        if record.archive_key and self.assets is not None:
            return await self.assets.url(record.archive_key)
        return record.video_url

    async def refresh_urls(self, records: Sequence[TaskRecord]) -> list[TaskRecord]:
        """`records` with their archived videos' URLs signed afresh, for showing (nothing is written: the
        poller may be updating the same rows)."""
        for record in records:
            if record.archive_key:
                record.archived_url = await self.lasting_url(record)
        return list(records)
