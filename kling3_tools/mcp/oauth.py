"""The HTTP transport as an OAuth 2.1 resource server (`[mcp.auth]`), with the `mcp` SDK's pieces: its bearer
middleware, its protected-resource metadata route (RFC 9728) and `WWW-Authenticate` answers; here only what
the SDK leaves to the server: checking a token, and which scope a tool call needs.

A JWT access token is checked against the issuer's keys (its JWKS, found through RFC 8414 or OpenID discovery,
kept, and fetched again for a key id it does not know, at most every `REFRESH_SECONDS`); an opaque one is
introspected (RFC 7662). Either way the issuer, the audience (this server's canonical URL, RFC 8707), the
expiry and not-before are checked. A token that fails says nothing about why: the answer is the SDK's 401."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.shared.auth import ProtectedResourceMetadata

from ..config_sections import McpAuthSettings
from ..domain.records import signed_in_identity

log = logging.getLogger("kling3_tools.mcp")

REFRESH_SECONDS = 30.0  # the least time between two fetches of the issuer's keys (an unknown kid asks again)
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]  # never "none", never HS*
LEEWAY_SECONDS = 5  # clocks a little apart
REMEMBERED = 10_000  # tokens whose check is remembered until they expire
INTROSPECTED_SECONDS = 60.0  # an opaque token's check is kept at most this long: revoking it takes effect
MAX_ANSWER_BYTES = 256 * 1024


def auth_settings(auth: McpAuthSettings) -> AuthSettings:
    """The SDK's resource-server settings: the metadata route names the issuer and scopes, every request needs
    the read scope (what a tool call needs besides is `ScopeGate`'s), and the verifier checks the audience."""
    return AuthSettings(
        issuer_url=auth.issuer,
        resource_server_url=auth.resource,
        required_scopes=[auth.read_scope],
        validate_token_resource=False,  # `OAuthVerifier` checks the audience itself
    )


def metadata_url(auth: McpAuthSettings) -> str:
    """Where this server's protected-resource metadata is (RFC 9728), as the SDK serves it."""
    from mcp.server.auth.routes import build_resource_metadata_url
    from pydantic import AnyHttpUrl

    return str(build_resource_metadata_url(AnyHttpUrl(auth.resource)))


def needs_generate() -> frozenset[str]:
    """The tools that spend or change something (not read-only, as each declares): they need `generate_scope`."""
    from . import manifest

    return frozenset(t.name for t in manifest.tools() if t.annotations is None or not t.annotations.read_only_hint)


def identity_of(token: AccessToken) -> str:
    """A person as this server knows them: their issuer and subject."""
    return signed_in_identity(str((token.claims or {}).get("iss", "")), token.subject or "")


class OAuthVerifier:
    """The SDK's `TokenVerifier` for `[mcp.auth]`."""

    def __init__(self, auth: McpAuthSettings, http: httpx.AsyncClient | None = None) -> None:
        self.auth = auth
        self.http = http or httpx.AsyncClient(timeout=10, follow_redirects=False)
        self._metadata: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._fetching = asyncio.Lock()
        self._checked: OrderedDict[str, tuple[float, AccessToken]] = OrderedDict()  # by hash: (until, token)

    async def verify_token(self, token: str) -> AccessToken | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        if (known := self._checked.get(key)) is not None:
            if known[0] > time.time():
                return known[1]
            del self._checked[key]
        opaque = token.count(".") != 2
        try:
            checked = await (self._introspected(token) if opaque else self._decoded(token))
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            log.info("a bearer token could not be checked: %s", type(exc).__name__)  # never the token
            return None
        if checked is not None:
            until = float(checked.expires_at or time.time() + INTROSPECTED_SECONDS)
            self._checked[key] = (min(until, time.time() + INTROSPECTED_SECONDS) if opaque else until, checked)
            while len(self._checked) > REMEMBERED:
                self._checked.popitem(last=False)
        return checked

    async def _decoded(self, token: str) -> AccessToken | None:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            signing = await self._key(kid)
            if signing is None:
                return None
            claims = jwt.decode(
                token,
                signing.key,
                algorithms=[signing.algorithm_name] if signing.algorithm_name in ALGORITHMS else ALGORITHMS,
                audience=self.auth.resource,
                issuer=self.auth.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError:
            return None
        return self._token(token, claims)

    async def _introspected(self, token: str) -> AccessToken | None:
        if not self.auth.introspection_url:
            return None
        secret = self.auth.client_secret.get_secret_value() if self.auth.client_secret else ""
        answer = await self.http.post(
            self.auth.introspection_url,
            data={"token": token, "token_type_hint": "access_token"},
            auth=(self.auth.client_id, secret),
        )
        claims = _json(answer)
        if answer.status_code != 200 or not claims.get("active"):
            return None
        if str(claims.get("token_type", "bearer")).lower() not in ("bearer", "access_token", "dpop"):
            return None  # a refresh token, say: not for calling this server
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        now = time.time()
        if claims.get("iss") not in (None, self.auth.issuer) or self.auth.resource not in audiences:
            return None
        if int(claims.get("exp", 0)) + LEEWAY_SECONDS < now or int(claims.get("nbf", 0)) - LEEWAY_SECONDS > now:
            return None
        return self._token(token, claims | {"iss": self.auth.issuer})

    def _token(self, token: str, claims: dict[str, Any]) -> AccessToken | None:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            return None
        scope = claims.get("scope", claims.get("scp", ""))
        scopes = scope.split() if isinstance(scope, str) else [str(s) for s in scope]
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or ""),
            scopes=scopes,
            expires_at=int(claims["exp"]) if "exp" in claims else None,
            resource=self.auth.resource,
            subject=subject,
            claims={"iss": claims.get("iss")},
        )

    async def _key(self, kid: Any) -> jwt.PyJWK | None:
        """The issuer's key `kid`, fetching its keys again when it is unknown (and they were not just fetched)."""
        if isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        async with self._fetching:
            if time.monotonic() - self._fetched_at >= REFRESH_SECONDS or not self._fetched_at:
                self._fetched_at = time.monotonic()
                metadata = await self._issuer_metadata()
                keys = _json(await self.http.get(metadata["jwks_uri"])).get("keys", [])
                fresh = {}
                for entry in keys:
                    try:
                        fresh[str(entry.get("kid", ""))] = jwt.PyJWK(entry)
                    except (jwt.PyJWTError, AttributeError, TypeError, ValueError):
                        continue  # a key this server cannot use (another type, a symmetric one, not a key)
                self._keys = fresh or self._keys
        if isinstance(kid, str):
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _issuer_metadata(self) -> dict[str, Any]:
        """RFC 8414 metadata, else OpenID discovery; the issuer it names must be the one configured."""
        if self._metadata is None:
            issuer = self.auth.issuer.rstrip("/")
            origin, _, path = issuer.partition("://")[2].partition("/")
            scheme = issuer.partition("://")[0]
            for url in (
                f"{scheme}://{origin}/.well-known/oauth-authorization-server" + (f"/{path}" if path else ""),
                f"{issuer}/.well-known/openid-configuration",
            ):
                answer = await self.http.get(url)
                metadata = _json(answer) if answer.status_code == 200 else {}
                if metadata.get("issuer") == self.auth.issuer and isinstance(metadata.get("jwks_uri"), str):
                    self._metadata = metadata
                    break
            else:
                raise ValueError("the issuer's metadata names no jwks_uri, or another issuer")
        return self._metadata


def _json(answer: httpx.Response) -> dict[str, Any]:
    if len(answer.content) > MAX_ANSWER_BYTES:
        raise ValueError("answer too large")
    body = json.loads(answer.content)
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


class ScopeGate:
    """Answers 403 `insufficient_scope` (RFC 6750, with the scope to ask for) to a tool call that spends or
    changes something when the caller's token lacks `generate_scope`, before the SDK reads the call. A missing or
    bad token goes on to the SDK, which answers 401."""

    def __init__(self, app: Any, verifier: OAuthVerifier, *, needs_generate: frozenset[str], metadata_url: str) -> None:
        self.app, self.verifier, self.needs_generate, self.metadata_url = app, verifier, needs_generate, metadata_url
        self.metadata_path = urlsplit(metadata_url).path
        auth = verifier.auth
        self.metadata = (
            ProtectedResourceMetadata(  # the SDK's route lists only the scope every request needs
                resource=auth.resource,
                authorization_servers=[auth.issuer],
                scopes_supported=[auth.read_scope, auth.generate_scope],
                bearer_methods_supported=["header"],
            )
            .model_dump_json(exclude_none=True)
            .encode()
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == self.metadata_path:
            await _answer(send, 200, [], self.metadata)
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name.lower() == b"authorization"]
        if len(given) > 1:  # the SDK reads the first, a dict the last: never let two tell different stories
            await _answer(send, 400, [], json.dumps({"error": "invalid_request"}).encode())
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_BODY_BYTES:
                await _answer(send, 413, [], b"")
                return
        body = b"".join(chunks)
        if _called_tools(body) & self.needs_generate:
            scheme, _, token = (given[0] if given else b"").decode("latin-1").partition(" ")
            checked = await self.verifier.verify_token(token.strip()) if scheme.lower() == "bearer" else None
            wanted = self.verifier.auth.generate_scope
            if checked is None:  # answered here, as the SDK would, rather than trusting it to find the same
                challenge = f'Bearer error="invalid_token", resource_metadata="{self.metadata_url}"'
                await _answer(send, 401, [(b"www-authenticate", challenge.encode())], b'{"error": "invalid_token"}')
                return
            if wanted not in checked.scopes:
                challenge = (
                    f'Bearer error="insufficient_scope", scope="{wanted}", resource_metadata="{self.metadata_url}", '
                    f'error_description="This tool needs the {wanted} scope"'
                )
                detail = json.dumps({"error": "insufficient_scope", "scope": wanted}).encode()
                await _answer(send, 403, [(b"www-authenticate", challenge.encode())], detail)
                return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


MAX_BODY_BYTES = 4 * 1024 * 1024


def _called_tools(body: bytes) -> set[str]:
    """The tools a JSON-RPC message (or batch) calls; nothing for anything that does not parse."""
    if b"tools/call" not in body and b"\\" not in body:  # no call however spelled (escapes): nothing to parse
        return set()
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return set()
    calls = message if isinstance(message, list) else [message]
    return {
        str(call["params"].get("name"))
        for call in calls
        if isinstance(call, dict) and call.get("method") == "tools/call" and isinstance(call.get("params"), dict)
    }


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    kind = [(b"content-type", b"application/json")] if body else []
    await send({"type": "http.response.start", "status": status, "headers": kind + headers})
    await send({"type": "http.response.body", "body": body})
