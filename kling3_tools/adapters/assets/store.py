"""Where local files and finished videos are kept so the API (and people) can fetch them: one small interface,
two backends. `ObjectAssetStore` is any bucket `obstore` reaches (S3 and what speaks its protocol: R2, MinIO,
B2; Google Cloud Storage; Azure): private objects under unguessable keys, handed out as presigned GET URLs
(or under `public_base_url`). `SandboxAssetStore` uploads to the sandbox the service talks to, so local files
work offline with no configuration."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from ...config import StorageSettings
from ...domain.errors import APIError, StoreError, missing_part

Content = bytes | Path | AsyncIterable[bytes]


class AssetStore(Protocol):
    async def put(self, content: Content, *, content_type: str, suffix: str) -> str:
        """Keep `content` under a new unguessable key; returns the key."""

    async def url(self, key: str) -> str:
        """A URL anyone holding it can GET the object from (signed afresh when the store signs)."""


def new_key(prefix: str, suffix: str) -> str:
    return f"{prefix}{secrets.token_urlsafe(24)}{suffix}"


class ObjectAssetStore:
    def __init__(self, settings: StorageSettings) -> None:
        try:  # the storage extra, loaded when `[storage] url` is set
            from obstore.store import AzureStore, GCSStore, S3Store, from_url
        except ImportError as exc:
            raise StoreError(missing_part("[storage]", "storage", exc)) from None

        parts = urlsplit(settings.url)
        if parts.scheme not in ("s3", "gs", "az", "abfs") or not parts.netloc:
            raise StoreError(f"[storage] url must look like s3://bucket/prefix (or gs://, az://), not {settings.url!r}")
        config: dict[str, str] = {}
        if settings.endpoint:
            config["endpoint"] = settings.endpoint
        if settings.region:
            config["region"] = settings.region
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            config["access_key_id"] = settings.access_key_id.get_secret_value()
            config["secret_access_key"] = settings.secret_access_key.get_secret_value()
        client_options: dict[str, Any] = {"connect_timeout": timedelta(seconds=10)}
        if settings.endpoint.startswith("http://"):
            client_options["allow_http"] = True
        options: Any = {  # config keys differ per cloud; these are S3's
            "config": config,
            "client_options": client_options,
            "retry_config": {"max_retries": 3, "retry_timeout": timedelta(seconds=30)},
        }
        store = from_url(f"{parts.scheme}://{parts.netloc}", **options)
        assert isinstance(store, S3Store | GCSStore | AzureStore)  # the schemes above
        self.store = store
        self.prefix = parts.path.strip("/") + "/" if parts.path.strip("/") else ""
        self.ttl = timedelta(seconds=settings.url_ttl_seconds)
        self.public_base_url = settings.public_base_url.rstrip("/")

    async def put(self, content: Content, *, content_type: str, suffix: str) -> str:
        import obstore

        key = new_key(self.prefix, suffix)
        attributes = {"Content-Type": content_type}
        try:
            if isinstance(content, Path):
                with content.open("rb") as file:  # streamed in parts, never whole in memory
                    await obstore.put_async(self.store, key, file, attributes=attributes)
            else:
                await obstore.put_async(self.store, key, content, attributes=attributes)
        except Exception as exc:  # obstore raises its own kinds; their message never holds a credential
            raise StoreError(f"cannot upload to [storage]: {_first_line(exc)}") from None
        return key

    async def url(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{key}"
        import obstore

        try:
            return str(await obstore.sign_async(self.store, "GET", key, self.ttl))
        except Exception as exc:
            raise StoreError(f"cannot sign a URL for [storage]: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    """obstore's messages carry a multi-line debug dump; its first line says what happened."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


class SandboxAssetStore:
    """Uploads to a sandbox (`POST /sandbox/uploads`); the sandbox serves them back at a URL of its own."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self.http, self.base_url, self.api_key = http, base_url.rstrip("/"), api_key

    async def put(self, content: Content, *, content_type: str, suffix: str) -> str:
        body: bytes | AsyncIterable[bytes]
        body = content.read_bytes() if isinstance(content, Path) else content
        response = await self.http.post(
            f"{self.base_url}/sandbox/uploads",
            content=body,
            headers={"content-type": content_type, "authorization": f"Bearer {self.api_key}", "x-suffix": suffix},
        )
        if response.status_code != 200:
            raise APIError(
                f"the sandbox refused the upload (HTTP {response.status_code})", status_code=response.status_code
            )
        return str(response.json()["key"])

    async def url(self, key: str) -> str:
        return f"{self.base_url}/uploads/{key}"
