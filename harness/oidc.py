"""A real authorization server on loopback (node-oidc-provider, `harness/oidc/`), and a person signing in at it
the way a browser would: what the tests of hosted MCP get their tokens from, through the `mcp` SDK's OAuth client.

node-oidc-provider is an OpenID Certified implementation that runs here without internet once installed from
npm (pinned in `harness/oidc/package-lock.json`): dynamic client registration, authorization code with PKCE,
resource indicators and JWT access tokens, as the MCP authorization specification asks of a server."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from .helpers import free_port, npm_ci

SERVER = Path(__file__).with_name("oidc")
REDIRECT = "http://127.0.0.1:9/callback"  # never reached: the browser below stops at the redirect to it


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


@contextlib.contextmanager
def authorization_server(*resources: str, token_seconds: int = 3600, opaque: bool = False) -> Iterator[str]:
    """The server issuing access tokens for `resources` (JWTs, or `opaque` ones it introspects for the client
    `introspector` / `introspector-secret` at `/token/introspection`); yields its issuer URL."""
    npm_ci(SERVER)
    port = free_port()
    process = subprocess.Popen(
        [
            "node",
            str(SERVER / "server.mjs"),
            str(port),
            ",".join(resources),
            str(token_seconds),
            "opaque" if opaque else "jwt",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"the authorization server did not start: {line!r}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@dataclass
class Wallet:
    """What the SDK's client keeps between sign-ins (its `TokenStorage`)."""

    tokens: OAuthToken | None = None
    client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@dataclass
class Person:
    """Someone who signs in at the authorization server and grants the client `grants` (None: what it asks)."""

    name: str
    grants: str | None = None
    wallet: Wallet = field(default_factory=Wallet)
    sign_ins: int = 0

    def oauth(self, resource: str) -> OAuthClientProvider:
        """The SDK's OAuth client for `resource`, signing in as this person when asked."""
        answer: dict[str, Any] = {}

        async def redirect(url: str) -> None:
            self.sign_ins += 1
            answer.update(await self.browse(url))

        async def callback() -> AuthorizationCodeResult:
            return AuthorizationCodeResult(**answer)

        metadata = OAuthClientMetadata(
            client_name=f"kling3 tests ({self.name})",
            redirect_uris=[REDIRECT],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        )
        return OAuthClientProvider(resource, metadata, self.wallet, redirect, callback)

    async def browse(self, url: str) -> dict[str, Any]:
        """Follow the authorization server's redirects as a browser, signing in and granting at each interaction
        (`grants`: the scopes this person leaves ticked of those the client asked for)."""
        if self.grants is not None:
            parts = urllib.parse.urlsplit(url)
            query = dict(urllib.parse.parse_qsl(parts.query)) | {"scope": self.grants}
            url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        async with httpx.AsyncClient() as browser:
            for _ in range(20):
                answer = await browser.get(url)
                location = answer.headers.get("location")
                if location is None:
                    raise RuntimeError(f"sign-in stopped: HTTP {answer.status_code} {answer.text[:200]}")
                url = urllib.parse.urljoin(url, location)
                if url.startswith(REDIRECT):
                    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
                    return {name: query[name][0] for name in ("code", "state", "iss") if name in query}
                if "/interaction/" in url:
                    url += f"?person={self.name}"
        raise RuntimeError("sign-in went round in circles")
