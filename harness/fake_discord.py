"""A local stand-in for Discord's REST API, and builders of real gateway payloads.

discord.py is pointed at it through `discord.http.Route.BASE`; it records every
call and answers with valid payloads. Interactions are fed through discord.py's
own `parse_interaction_create`, as the gateway would deliver them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

APP_ID = 900000000000000001
BOT_ID = 900000000000000002
GUILD_ID = 910000000000000001
CHANNEL_ID = 920000000000000001
ADMIN_ROLE_ID = 930000000000000001
_ids = itertools.count(940000000000000001)


def snowflake() -> str:
    return str(next(_ids))


def user(user_id: int, name: str = "someone", *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name, "avatar": None, "bot": bot}


def message(
    channel_id: int | str, content: str = "", *, embeds: Any = (), attachments: Any = (), **extra: Any
) -> dict[str, Any]:
    return {
        "id": extra.pop("id", None) or snowflake(),
        "channel_id": str(channel_id),
        "type": 0,
        "content": content,
        "author": user(BOT_ID, "kling3", bot=True),
        "attachments": list(attachments),
        "embeds": list(embeds),
        "mentions": [],
        "mention_roles": [],
        "mention_everyone": False,
        "pinned": False,
        "tts": False,
        "timestamp": "2026-11-23T10:00:00+00:00",
        "edited_timestamp": None,
        "flags": extra.pop("flags", 0),
        "components": extra.pop("components", []),
        **extra,
    }


def guild_payload(premium_tier: int = 0) -> dict[str, Any]:
    everyone = {"id": str(GUILD_ID), "name": "@everyone", "permissions": "0", "position": 0, "color": 0,
                "hoist": False, "managed": False, "mentionable": False, "flags": 0}  # fmt: skip
    admin = {**everyone, "id": str(ADMIN_ROLE_ID), "name": "video-admin", "position": 1}
    return {
        "id": str(GUILD_ID), "name": "Test server", "icon": None, "owner_id": "1", "roles": [everyone, admin],
        "emojis": [], "stickers": [], "features": [], "premium_tier": premium_tier, "member_count": 3,
        "channels": [], "members": [], "threads": [], "unavailable": False, "verification_level": 0,
        "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
        "preferred_locale": "en-US", "system_channel_flags": 0,
    }  # fmt: skip


@dataclass
class Call:
    method: str
    path: str
    body: Any
    files: list[tuple[str, int]]
    at: float
    answer: Any = None


@dataclass
class FakeDiscord:
    calls: list[Call] = field(default_factory=list)
    premium_tier: int = 0
    files: dict[str, bytes] = field(default_factory=dict)  # Discord's CDN: attachments by file name
    url: str = ""  # where this fake listens, once it does
    delays: dict[str, float] = field(default_factory=dict)  # seconds before answering, by path (`/users/@me`)
    refuse_files_over: int | None = None  # a file larger than this is answered 413, as Discord does over its limit

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/v10/{tail:.*}", self.handle)
        app.router.add_get("/attachments/{name}", self.attachment)
        return app

    async def attachment(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["name"])
        return web.Response(body=data) if data is not None else web.Response(status=404)

    def host(self, filename: str, data: bytes, content_type: str) -> dict[str, Any]:
        """An attachment whose URL this fake serves, as Discord's CDN would."""
        self.files[filename] = data
        return attachment(filename, content_type, len(data), f"{self.url}/attachments/{filename}")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        files: list[tuple[str, int]] = []
        if request.content_type == "application/json":
            body = await request.json()
        elif request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(data)
                else:
                    files.append((part.filename or "", len(data)))  # type: ignore[union-attr]
        path = "/" + request.match_info["tail"]
        await asyncio.sleep(self.delays.get(path, 0))
        call = Call(request.method, path, body, files, time.monotonic())
        self.calls.append(call)
        if self.refuse_files_over is not None and any(size > self.refuse_files_over for _, size in files):
            call.answer = {"code": 40005, "message": "Request entity too large"}
            return web.Response(status=413, body=json.dumps(call.answer).encode(), content_type="application/json")
        call.answer = self.answer(request.method, path.split("/")[1:], body)
        # exactly "application/json": discord.py reads anything else (even with a charset) as text
        return web.Response(body=json.dumps(call.answer).encode(), content_type="application/json")

    def answer(self, method: str, parts: list[str], body: Any) -> Any:
        match method, parts:
            case "GET", ["users", "@me"]:
                return user(BOT_ID, "kling3", bot=True)
            case "GET", ["oauth2", "applications", "@me"]:
                return {"id": str(APP_ID), "name": "kling3", "icon": None, "description": "", "bot_public": True,
                        "bot_require_code_grant": False, "verify_key": "0" * 64, "flags": 0, "team": None,
                        "owner": user(1, "owner"), "bot": user(BOT_ID, "kling3", bot=True)}  # fmt: skip
            case "PUT", ["applications", _, *_, "commands"]:
                return [
                    {"description": "", **command, "id": snowflake(), "application_id": str(APP_ID), "version": "1"}
                    for command in body
                ]  # fmt: skip (a context menu's is "")
            case "POST", ["interactions", interaction_id, _token, "callback"]:
                kind = body["type"]
                flags = (body.get("data") or {}).get("flags", 0)
                resource: dict[str, Any] = {"type": kind}
                if kind in (4, 7):
                    resource["message"] = message(CHANNEL_ID, **(body.get("data") or {}))
                return {"interaction": {"id": interaction_id, "type": 2, "response_message_loading": kind == 5,
                                        "response_message_ephemeral": bool(flags & 64)},
                        "resource": resource}  # fmt: skip
            case (("POST" | "PATCH"), ["webhooks", _, _, *_]):
                return message(CHANNEL_ID, **_message_fields(body))
            case "GET", ["webhooks", _, _, "messages", _]:
                return message(CHANNEL_ID)
            case "POST", ["channels", channel_id, "messages"]:
                return message(channel_id, **_message_fields(body))
            case "PATCH", ["channels", channel_id, "messages", message_id]:
                return message(channel_id, id=message_id, **_message_fields(body))
            case "GET", ["guilds", _]:
                return guild_payload(self.premium_tier)
        raise web.HTTPNotFound(text=f"the fake Discord does not know {method} /{'/'.join(parts)}")

    # --- what tests look at -------------------------------------------------------------

    def find(self, method: str, fragment: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and fragment in c.path]

    def channel_posts(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.path.startswith("/channels/")]


def _message_fields(body: Any) -> dict[str, Any]:
    body = body or {}
    return {"content": body.get("content") or "", "embeds": body.get("embeds") or [],
            "flags": body.get("flags", 0), "components": body.get("components") or []}  # fmt: skip


# --- INTERACTION_CREATE payloads ------------------------------------------------------------


def member(user_id: int, *, roles: list[int] | None = None) -> dict[str, Any]:
    return {"user": user(user_id, f"user{user_id}"), "roles": [str(r) for r in roles or []], "nick": None,
            "joined_at": "2026-01-01T00:00:00+00:00", "deaf": False, "mute": False, "flags": 0,
            "permissions": "2147483647"}  # fmt: skip


def _base(user_id: int, kind: int, data: dict[str, Any], *, roles: list[int] | None, guild: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": snowflake(), "application_id": str(APP_ID), "type": kind, "token": f"token-{snowflake()}",
        "version": 1, "data": data, "channel_id": str(CHANNEL_ID),
        "channel": {"id": str(CHANNEL_ID), "type": 0 if guild else 1, "name": "videos", "position": 0,
                    "permission_overwrites": [], "nsfw": False, "parent_id": None},
        "locale": "en-US", "app_permissions": "2147483647", "entitlements": [],
        "authorizing_integration_owners": {"0": str(GUILD_ID)} if guild else {"1": str(user_id)},
        "context": 0 if guild else 1, "attachment_size_limit": 10 * 1024 * 1024,
    }  # fmt: skip
    if guild:
        payload["guild_id"] = str(GUILD_ID)
        payload["guild_locale"] = "en-US"
        payload["member"] = member(user_id, roles=roles)
    else:
        payload["user"] = user(user_id, f"user{user_id}")
    return payload


def slash(
    subcommand: str, user_id: int, *, attachments: dict[str, dict[str, Any]] | None = None,
    roles: list[int] | None = None, guild: bool = True, **options: Any,
) -> dict[str, Any]:  # fmt: skip
    """`/kling <subcommand> option:value …`; attachments go to `data.resolved`."""
    types = {str: 3, int: 4, bool: 5, float: 10}
    option_list = [{"name": k, "type": types[type(v)], "value": v} for k, v in options.items()]
    resolved: dict[str, Any] = {}
    for name, attachment in (attachments or {}).items():
        option_list.append({"name": name, "type": 11, "value": attachment["id"]})
        resolved.setdefault("attachments", {})[attachment["id"]] = attachment
    *group, name = subcommand.split(" ")  # "character create": a subcommand of a group
    chosen = {"name": name, "type": 1, "options": option_list}
    for outer in group:
        chosen = {"name": outer, "type": 2, "options": [chosen]}
    data = {"id": snowflake(), "name": "kling", "type": 1, "options": [chosen], "resolved": resolved}
    return _base(user_id, 2, data, roles=roles, guild=guild)


def message_menu(name: str, user_id: int, target: dict[str, Any]) -> dict[str, Any]:
    """A message's Apps menu entry `name`, chosen on `target` (a message payload)."""
    data = {"id": snowflake(), "name": name, "type": 3, "target_id": target["id"],
            "resolved": {"messages": {target["id"]: target}}}  # fmt: skip
    return _base(user_id, 2, data, roles=None, guild=True)


def button(custom_id: str, user_id: int, clicked: dict[str, Any]) -> dict[str, Any]:
    """A click on a button of `clicked` (a message payload, with its components, as Discord sends it)."""
    payload = _base(user_id, 3, {"custom_id": custom_id, "component_type": 2}, roles=None, guild=True)
    payload["message"] = clicked
    return payload


def modal_submit(custom_id: str, user_id: int, values: dict[str, str]) -> dict[str, Any]:
    rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()]
    return _base(user_id, 5, {"custom_id": custom_id, "components": rows}, roles=None, guild=True)


def attachment(filename: str, content_type: str, size: int, url: str) -> dict[str, Any]:
    return {"id": snowflake(), "filename": filename, "content_type": content_type, "size": size, "url": url,
            "proxy_url": url}  # fmt: skip
