"""Serving MCP over HTTP: who a caller is, and the bearer token in front of the app."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

ANONYMOUS = "anonymous"


def client_identity(ctx: Context[Any, Any]) -> str | None:
    """Whose tasks a caller sees over HTTP: the person signed in ([mcp.auth]: their issuer and subject), else its
    bearer token (hashed), else its MCP session (2025-11-25), else
    "anonymous": 2026-07-28 requests without a token carry nothing that tells two clients apart, so they share
    one identity, apart from every session's and token's. None over stdio, where the one client is the local
    user and sees every MCP task."""
    headers = ctx.headers
    if not headers:
        return None
    if (signed_in := get_access_token()) is not None and signed_in.subject:  # [mcp.auth]: a person
        from .oauth import identity_of

        return identity_of(signed_in)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token-" + hashlib.sha256(token.strip().encode()).hexdigest()[:16]
    # A 2026-07-28 request has no session: a session id it carries is anyone's to copy.
    session = headers.get("mcp-session-id") if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS else None
    return f"session-{session}" if session else ANONYMOUS


def signed_in_subject() -> str | None:
    """The subject of the person signed in for this request ([mcp.auth]), else None."""
    token = get_access_token()
    return None if token is None else token.subject


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BearerTokenMiddleware:
    """Refuses HTTP requests without `Authorization: Bearer <token>` for one of the tokens (401)."""

    def __init__(self, app: Any, tokens: list[str]) -> None:
        self.app = app
        self.expected = [f"Bearer {token}".encode() for token in tokens]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not any([hmac.compare_digest(given, expected) for expected in self.expected]):  # every one compared
                await send(
                    {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]}
                )
                await send({"type": "http.response.body", "body": b"Missing or wrong bearer token"})
                return
        await self.app(scope, receive, send)
