"""What a finished video gets before its result is handed over: a copy kept in `[storage]` (best effort: when it
cannot be kept, the API's own URL is delivered), and with `[poller] download`, the file saved to `media_dir`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import platformdirs

from ..adapters.client import AsyncKlingClient
from ..config import PollerSettings
from ..domain.records import Outcome, TaskRecord

log = logging.getLogger("kling3_tools.poller")


class Finishing:
    def __init__(
        self,
        client: AsyncKlingClient,
        settings: PollerSettings,
        archiver: Callable[[TaskRecord], Awaitable[None]] | None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.archiver = archiver  # copies a finished video into [storage]
        self.media_dir = Path(settings.media_dir).expanduser() if settings.media_dir else None

    async def keep(self, record: TaskRecord) -> None:
        """Archive and download a succeeded task's video, once each; a failed download raises (it is a failed
        delivery, tried again later)."""
        if record.outcome is not Outcome.SUCCEEDED:
            return
        if self.archiver is not None and not record.archive_key:
            try:
                await self.archiver(record)
            except Exception as exc:  # a bucket that is down or a video over the cap must not hold back delivery
                log.warning("could not archive the video of %s (%s); delivering the API's URL", record.task_id, exc)
        if self.settings.download and not record.local_path:
            record.local_path = str(await self._download(record))

    async def _download(self, record: TaskRecord) -> Path:
        folder = self.media_dir or Path(platformdirs.user_data_dir("kling3")) / "videos"
        folder.mkdir(parents=True, exist_ok=True)
        max_bytes = int(self.settings.max_download_mb * 1024 * 1024)
        return await self.client.download(record.to_task(), folder, max_bytes=max_bytes)
