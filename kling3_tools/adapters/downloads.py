"""Fetching the videos an API answer points at, for the client, the CLI, the poller and the bot.

The URL and the task id come from the API's answer, so both are untrusted:
- the file name is built from a sanitised task id and must resolve inside the target folder;
- only http(s) URLs, and only to public addresses, or to the API's own host (a local sandbox);
- redirects are followed by hand, at most `MAX_REDIRECTS`, each hop checked like the first;
- the size is capped, against Content-Length and again while streaming;
- an empty body or a type that is not a video is a failure, never a delivered file;
- a file is written under a temporary name and renamed only when complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ..domain.errors import DownloadError, error_class_for

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 500 * 1024 * 1024
_VIDEO_TYPES = ("video/", "application/octet-stream", "binary/octet-stream")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def file_name(task_id: str) -> str:
    """`<task id>.mp4` with anything but letters, digits, `-` and `_` replaced: never a path."""
    return f"{_UNSAFE.sub('_', task_id)[:120].strip('_') or 'video'}.mp4"


def target_in(folder: Path, task_id: str) -> Path:
    """Where a task's video goes inside `folder`; refused if it would resolve anywhere else."""
    root = folder.expanduser().resolve()
    target = (root / file_name(task_id)).resolve()
    if target.parent != root:
        raise DownloadError(f"Refused to write {target}: it is outside {root}.")
    return target


async def _addresses(host: str) -> set[Address]:
    try:
        return {ipaddress.ip_address(host.strip("[]"))}
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError as exc:
        raise DownloadError(f"Cannot resolve {host}: {exc}.", retryable=True) from None
    return {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}


# IPv6 forms that carry an IPv4 address (NAT64, 6to4, Teredo, IPv4-compatible): `is_global` may call them
# public while they lead to 169.254.169.254 or 127.0.0.1.
_IPV4_IN_DISGUISE = [
    ipaddress.ip_network(net) for net in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", "::/96")
]


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if any(address in net for net in _IPV4_IN_DISGUISE):
            return False
    return address.is_global


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which addresses an API-supplied URL may lead to: public ones, and the API's own host."""

    api_host: str = ""

    @classmethod
    def for_api(cls, base_url: str) -> UrlPolicy:
        return cls(api_host=urlsplit(base_url).hostname or "")

    async def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DownloadError(f"Refused to fetch {url[:200]!r}: only http(s) URLs are fetched.")
        await self.check_addresses(parts.hostname, await _addresses(parts.hostname))

    async def check_addresses(self, host: str, addresses: set[Address]) -> None:
        if all(is_public(address) for address in addresses):
            return
        if self.api_host and addresses <= await _addresses(self.api_host):
            return  # the API itself lives there (a sandbox on this machine)
        raise DownloadError(
            f"Refused to fetch {host}: it is a private, loopback or link-local address, and not the API's own host."
        )


async def fetch(
    http: httpx.AsyncClient, url: str, write: Callable[[bytes], object], *, policy: UrlPolicy, max_bytes: int
) -> int:
    """Stream a video to `write` (a function or a coroutine function), chunk by chunk; the bytes written.
    Raises `DownloadError` (or the API error for an HTTP error status, so that 429 and 5xx are retried like
    any safe request)."""
    for _ in range(MAX_REDIRECTS + 1):
        await policy.check(url)
        # No Authorization header: the URL usually points at a CDN.
        async with http.stream("GET", url, follow_redirects=False) as response:
            # Checked again on the connection itself: a name that resolved to a public address for the check
            # and to a private one for the connection (DNS rebinding) gets no further than its headers.
            stream = response.extensions.get("network_stream")
            peer = stream.get_extra_info("server_addr") if stream is not None else None
            if peer:
                host = urlsplit(url).hostname or ""
                await policy.check_addresses(host, {ipaddress.ip_address(str(peer[0]).split("%")[0])})
            if response.is_redirect:
                url = str(response.url.join(response.headers.get("location", "")))
                continue
            if response.status_code >= 400:
                cls = error_class_for(response.status_code, None)
                raise cls(f"The video URL answered HTTP {response.status_code}.", status_code=response.status_code)
            kind = response.headers.get("content-type", "").lower()
            if kind and not kind.startswith(_VIDEO_TYPES):
                raise DownloadError(f"The video URL answered {kind.split(';')[0]}, not a video.")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise DownloadError(
                    f"The video is {int(declared) / 1e6:.0f} MB, above the {max_bytes / 1e6:.0f} MB cap."
                )
            size = 0
            async for chunk in response.aiter_bytes(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(f"The video grew past the {max_bytes / 1e6:.0f} MB cap; it was not kept.")
                if inspect.isawaitable(written := write(chunk)):
                    await written
            if size == 0:
                raise DownloadError("The video URL answered an empty body.")
            return size
    raise DownloadError(f"More than {MAX_REDIRECTS} redirects; the video was not fetched.")


async def to_file(
    http: httpx.AsyncClient, url: str, target: Path, *, policy: UrlPolicy, max_bytes: int = DEFAULT_MAX_BYTES
) -> Path:
    """Fetch into `target` atomically: a temporary file beside it, renamed once complete."""
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as file:
            await fetch(http, url, file.write, policy=policy, max_bytes=max_bytes)
        os.replace(partial, target)
    except OSError as exc:
        raise DownloadError(f"Cannot write {target}: {exc.strerror or exc}.") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return target


async def chunks(http: httpx.AsyncClient, url: str, *, policy: UrlPolicy, max_bytes: int) -> AsyncIterator[bytes]:
    """The video as it arrives, by the same rules, for a consumer that streams it on (an upload): at most a
    few chunks are held at once; an error while fetching is raised to the consumer."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)

    async def produce() -> None:
        await fetch(http, url, queue.put, policy=policy, max_bytes=max_bytes)
        await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        while (chunk := await _next(queue, producer)) is not None:
            yield chunk
        await producer  # raises what the fetch raised
    finally:
        producer.cancel()


async def _next(queue: asyncio.Queue[bytes | None], producer: asyncio.Task[None]) -> bytes | None:
    getter = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({getter, producer}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done or producer.exception() is None:
        return await getter  # the fetch ended well: what it queued is still to come
    getter.cancel()
    return producer.result()  # raises what the fetch raised


async def to_memory(http: httpx.AsyncClient, url: str, *, policy: UrlPolicy, max_bytes: int) -> bytes:
    data = bytearray()
    await fetch(http, url, data.extend, policy=policy, max_bytes=max_bytes)
    return bytes(data)
