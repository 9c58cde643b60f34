"""What a service is built from, opened from the settings: one pooled HTTP client, the API client (for the
configured API, or for an embedded sandbox started here), the asset store and the task store."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from .adapters.assets.store import AssetStore, ObjectAssetStore, SandboxAssetStore
from .adapters.client import AsyncKlingClient, RetryPolicy
from .adapters.pool import http_pool
from .adapters.providers import CALLBACK_PATH, PROVIDERS, Credentials
from .adapters.sandbox import embedded
from .adapters.store import DEFAULT_STORE, SANDBOX_STORE, TaskStore, default_store_path, open_store
from .config import Settings
from .domain.records import TaskRecord
from .workflows.schedule import SchedulePolicy


def _as_they_are(urls: list[str]) -> list[str]:
    return urls


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The API as this process reaches it: its name in the store, and its videos' URLs as reached from here
    (an embedded sandbox listens on a new port in every process, and serves the videos of earlier ones)."""

    api_url: str
    videos: Callable[[list[str]], list[str]] = _as_they_are
    keeps_videos: Path | None = None  # where copies of its videos are kept, when their URLs die with the process

    def reachable(self, record: TaskRecord) -> TaskRecord:
        if record.api_url == self.api_url:
            record.video_urls = self.videos(record.video_urls)
        return record


@dataclass(frozen=True, slots=True)
class Parts:
    http: httpx.AsyncClient
    client: AsyncKlingClient
    store: TaskStore
    assets: AssetStore | None
    endpoint: Endpoint
    schedule: SchedulePolicy | None  # the embedded sandbox's quick one; None: from the settings


async def open_parts(
    stack: contextlib.AsyncExitStack, settings: Settings, *, sandbox: bool, wait_for_store: bool = False
) -> Parts:
    """Open every part on `stack`, which closes them; with `wait_for_store`, a store server that does not
    answer yet is waited for (a long-lived worker started before its database)."""
    http = await stack.enter_async_context(http_pool(httpx.Timeout(settings.timeout_seconds, connect=10)))
    schedule: SchedulePolicy | None = None
    endpoint: Endpoint | None = None
    credentials = Credentials(settings.api_key, settings.access_key, settings.secret_key)
    assets: AssetStore | None = ObjectAssetStore(settings.storage) if settings.storage.url else None
    if sandbox:
        server = stack.enter_context(embedded.start(settings.sandbox))
        base_url = server.url
        credentials = Credentials(
            SecretStr(server.api_key), SecretStr(settings.sandbox.access_key), SecretStr(settings.sandbox.secret_key)
        )
        endpoint = Endpoint(
            embedded.API_URL, functools.partial(embedded.served_by, server.url), default_store_path(embedded.VIDEOS)
        )
        schedule = SchedulePolicy.sized_for(settings.sandbox.finish_seconds)
        assets = assets or SandboxAssetStore(http, server.url, server.api_key)
    else:
        base_url = settings.base_url
    public = settings.callbacks.public_url.rstrip("/")
    callback_url = public + CALLBACK_PATH if public else None
    provider = PROVIDERS[settings.provider](credentials, callback_url=callback_url, prices=settings.pricing[0])
    retry = RetryPolicy(max_retries=settings.max_retries)
    client = AsyncKlingClient(
        provider=provider, base_url=base_url, retry=retry, http_client=http, deadline=settings.timeout_seconds
    )
    endpoint = endpoint or Endpoint(client.base_url)
    store = await open_store(
        settings.store.url,
        password=settings.store.password,
        default_name=SANDBOX_STORE if sandbox else DEFAULT_STORE,
        pool_size=settings.store.pool_size,
        busy_timeout=settings.store.busy_timeout_seconds,
        wait=wait_for_store,
    )
    stack.push_async_callback(store.close)
    return Parts(http, client, store, assets, endpoint, schedule)
