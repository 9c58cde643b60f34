"""Keeping finished videos: Kling deletes its copies after about 30 days (and other hosts sooner), so with
`[storage] archive_videos` the poller streams each finished video into the asset store before delivering it,
by the same rules as any download (size cap, addresses, redirects), never holding it whole in memory."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from ...domain.records import TaskRecord
from .. import downloads
from .store import AssetStore


@dataclass(frozen=True)
class Archiver:
    assets: AssetStore
    http: httpx.AsyncClient
    policy: downloads.UrlPolicy
    max_bytes: int

    async def __call__(self, record: TaskRecord) -> None:
        """Copy the record's video into the store; records where (`archive_key`) and a URL of it."""
        if not record.video_urls:
            return
        video = downloads.chunks(self.http, record.video_urls[0], policy=self.policy, max_bytes=self.max_bytes)
        key = await self.assets.put(video, content_type="video/mp4", suffix=".mp4")
        record.archive_key = key
        record.archived_url = await self.assets.url(key)
