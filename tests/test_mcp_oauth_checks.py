"""The token checks and the scope gate of `[mcp.auth]` against an issuer that answers as told (an httpx mock of
its metadata, keys and introspection): what a hostile or broken issuer, or a crafted request, would try. The
flow itself, with a real authorization server, is tests/test_mcp_oauth.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from starlette.middleware.authentication import AuthenticationMiddleware

from kling3_tools.config_sections import McpAuthSettings
from kling3_tools.mcp.oauth import OAuthVerifier, ScopeGate

ISSUER, RESOURCE = "https://issuer.test", "https://mcp.test/mcp"
METADATA = "https://mcp.test/.well-known/oauth-protected-resource/mcp"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWK = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())) | {"kid": "k1", "alg": "RS256"}


class Issuer:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {"jwks": 0, "introspect": 0}
        self.keys_status = 200
        self.active = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/.well-known/oauth-authorization-server"):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"})
        if path == "/jwks":
            self.hits["jwks"] += 1
            return httpx.Response(self.keys_status, json={"keys": [JWK] if self.keys_status == 200 else []})
        if path == "/introspect":
            self.hits["introspect"] += 1
            claims = {"active": self.active, "sub": "alice", "aud": RESOURCE, "exp": int(time.time()) + 3600}
            return httpx.Response(200, json=claims | {"scope": "kling3:read kling3:generate"})
        return httpx.Response(404)


def verifier(issuer: Issuer, **auth: Any) -> OAuthVerifier:
    settings = McpAuthSettings(issuer=ISSUER, resource=RESOURCE, **auth)
    return OAuthVerifier(settings, httpx.AsyncClient(transport=httpx.MockTransport(issuer)))


def signed(scope: str = "kling3:read", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": RESOURCE, "sub": "alice", "exp": now + 600, "scope": scope} | claims
    return jwt.encode(body, KEY, algorithm="RS256", headers={"kid": "k1"})


def confused() -> str:
    """The classic algorithm confusion: HS256, its secret the issuer's public key (PyJWT will not make one)."""
    from cryptography.hazmat.primitives import serialization

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"iss": ISSUER, "aud": RESOURCE, "sub": "a", "exp": int(time.time()) + 60, "scope": "kling3:generate"}
    signing = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': 'k1'})}.{part(claims)}"
    public = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    mac = hmac.new(public, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def tool_endpoint(scope: Any, receive: Any, send: Any) -> None:
    """Stands in for the SDK's MCP endpoint: it says so when a call reaches it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"the tool ran"})


def served(check: OAuthVerifier) -> Any:
    """The SDK's bearer middleware (which needs the read scope) behind our gate, as `kling3-mcp` stacks them."""
    sdk = AuthenticationMiddleware(
        AuthContextMiddleware(RequireAuthMiddleware(tool_endpoint, ["kling3:read"])), backend=BearerAuthBackend(check)
    )
    return ScopeGate(sdk, check, needs_generate=frozenset({"generate_video"}), metadata_url=METADATA)


CALL = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"generate_video","arguments":{}}}'


async def test_a_spending_call_needs_the_generate_scope_whatever_the_headers_say():
    app = served(verifier(Issuer()))
    read_only, full = signed("kling3:read"), signed("kling3:read kling3:generate")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://mcp.test") as client:
        assert (await client.post("/mcp", content=CALL, headers={"authorization": f"Bearer {full}"})).status_code == 200
        refused = await client.post("/mcp", content=CALL, headers={"authorization": f"Bearer {read_only}"})
        assert refused.status_code == 403 and 'scope="kling3:generate"' in refused.headers["www-authenticate"]
        for spelled in (rb'"tools\/call"', rb'"\u0074ools/call"'):  # the same method, escaped
            escaped = CALL.replace(b'"tools/call"', spelled)
            sent = await client.post("/mcp", content=escaped, headers={"authorization": f"Bearer {read_only}"})
            assert sent.status_code == 403, spelled
        twice = [("authorization", f"Bearer {read_only}"), ("authorization", "Bearer junk")]
        assert (await client.post("/mcp", content=CALL, headers=twice)).status_code == 400  # was 200: the tool ran
        junk = await client.post("/mcp", content=CALL, headers={"authorization": "Bearer junk"})
        assert junk.status_code == 401 and "resource_metadata" in junk.headers["www-authenticate"]
        deep = b"[" * 100_000 + b"]" * 100_000
        assert (
            await client.post("/mcp", content=deep, headers={"authorization": f"Bearer {read_only}"})
        ).status_code == 200
        assert (await client.get("/mcp", headers={"authorization": f"Bearer {read_only}"})).text == "the tool ran"
        metadata = (await client.get("/.well-known/oauth-protected-resource/mcp")).json()
    assert metadata["scopes_supported"] == ["kling3:read", "kling3:generate"]


async def test_an_issuer_without_keys_is_asked_again_at_most_every_30_seconds():
    issuer = Issuer()
    issuer.keys_status = 503
    check = verifier(issuer)
    for _ in range(50):
        assert await check.verify_token(signed()) is None
    assert issuer.hits["jwks"] == 1  # was one a token: 50


async def test_a_revoked_opaque_token_is_refused_within_a_minute(monkeypatch):
    issuer = Issuer()
    check = verifier(issuer, introspection_url=f"{ISSUER}/introspect", client_id="rs")
    assert await check.verify_token("opaque-token") is not None
    issuer.active = False
    assert await check.verify_token("opaque-token") is not None  # kept a while: no call per request
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert await check.verify_token("opaque-token") is None  # was accepted until the token's own expiry
    assert issuer.hits["introspect"] == 2


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(confused, id="HS256 keyed with the public key"),
        pytest.param(lambda: signed(aud="https://elsewhere.test/mcp"), id="another audience"),
        pytest.param(lambda: signed(iss="https://issuer.test/"), id="another issuer by a slash"),
        pytest.param(lambda: signed(nbf=int(time.time()) + 600), id="not yet valid"),
        pytest.param(lambda: signed(exp=int(time.time()) - 60), id="expired"),
        pytest.param(lambda: signed(sub=""), id="no subject"),
    ],
)
async def test_a_token_that_should_not_hold_does_not(token):
    assert await verifier(Issuer()).verify_token(token()) is None
