"""The process's one pooled HTTP client (the API, video downloads, the sandbox's assets), and what its first
request would load, loaded ahead by a long-lived process."""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10)


class _NoneFromAnswers(httpx.Cookies):
    """A jar that never takes a cookie from an answer: `Set-Cookie` is dropped unread."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass


class CookielessClient(httpx.AsyncClient):
    """`httpx.AsyncClient` that takes no cookie from an answer (those given to it are sent as usual). The API
    authenticates by key and video hosts by signed URL, so nothing a server sets is kept or sent back to it;
    and httpx 0.28's cookie bookkeeping, done for every answer even without a `Set-Cookie` (about 7 % of a
    status call's CPU), is skipped. A host that sets a cookie on a redirect and wants it back at the next hop
    cannot be fetched: the redirects then run out."""

    def __init__(self, *, cookies: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _NoneFromAnswers(cookies)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:  # what httpx.Cookies takes
        self._jar = _NoneFromAnswers(cookies)


def http_pool(timeout: float | httpx.Timeout = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """The process's one pooled HTTP client (the API, video downloads, the sandbox's assets)."""
    return CookielessClient(timeout=timeout, limits=DEFAULT_LIMITS)


async def load_backend() -> None:
    """Load what httpcore's first request would (anyio and its asyncio backend, ~15 ms). A long-lived process
    calls it when it starts (every one runs a poller), not while its first answers wait (a burst of Discord
    commands right after login); a one-shot command that makes no request never loads them."""
    import anyio.lowlevel

    await anyio.lowlevel.checkpoint()
