"""Posting results back to Discord: the task's embed edited in place, then a message that mentions the requester.

Everything goes through the bot token over REST (channel messages), never an
interaction follow-up: interaction tokens expire after 15 minutes and videos
can take longer, or finish after a restart. So a poller worker needs no
gateway connection: `rest_notifier()` logs in over REST only.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import discord

from kling3_tools.domain.errors import KlingError
from kling3_tools.domain.records import DiscordOrigin, Outcome, TaskRecord
from kling3_tools.domain.story_record import StoryRecord, StoryState
from kling3_tools.service import KlingService

from .embeds import story_embed, task_embed
from .views import result_view

log = logging.getLogger("kling3_tools.discord")
MENTION = discord.AllowedMentions(users=True, everyone=False, roles=False)  # the requester, never @everyone


class DiscordNotifier:
    """The poller's notifier for tasks started with /kling."""

    kind = "discord"

    def __init__(self, client: discord.Client, service: KlingService, *, min_edit_seconds: float = 5.0) -> None:
        self.client = client
        self.service = service
        self.settings = service.settings.discord
        self.min_edit_seconds = min_edit_seconds
        self._last_edit: dict[str, float] = {}
        self._upload_limits: dict[int, int] = {}

    def _may_edit(self, key: str) -> bool:
        """Well inside Discord's rate limits: at most one edit per message every few seconds."""
        now = time.monotonic()
        if now - self._last_edit.get(key, 0.0) < self.min_edit_seconds:
            return False
        self._last_edit[key] = now
        return True

    async def progress(self, record: TaskRecord) -> None:
        if self._may_edit(record.task_id):
            await self._edit_embed(record)

    async def deliver(self, record: TaskRecord) -> None:
        origin = record.origin
        assert isinstance(origin, DiscordOrigin)
        self._last_edit.pop(record.task_id, None)
        with contextlib.suppress(discord.HTTPException):  # the embed may be gone; the message below matters
            await self._edit_embed(record)
        channel, mention = self._channel(origin), f"<@{origin.user_id}>"
        if record.outcome is Outcome.SUCCEEDED:
            video = await self._attachment(record, origin.guild_id)
            link = await self.service.videos.lasting_url(record)  # the archived copy's, when there is one
            view = result_view(record.task_id, self.service.prices)
            await _post(channel, f"{mention} your video is ready.", video, link, view=view)
        else:
            what = "timed out" if record.outcome is Outcome.TIMED_OUT else "failed"
            await channel.send(
                f"{mention} your video {what} (task `{record.task_id}`): {record.error_message or 'no reason given'}",
                allowed_mentions=MENTION,
            )

    async def story_progress(self, record: StoryRecord) -> None:
        if self._may_edit(record.story_id):
            await self._edit_story_embed(record)

    async def deliver_story(self, record: StoryRecord) -> None:
        origin = record.origin
        assert isinstance(origin, DiscordOrigin)
        self._last_edit.pop(record.story_id, None)
        with contextlib.suppress(discord.HTTPException):
            await self._edit_story_embed(record)
        channel, mention = self._channel(origin), f"<@{origin.user_id}>"
        if record.state is not StoryState.SUCCEEDED:
            text = f"{mention} your story `{record.story_id}` stopped: {record.note or 'no reason given'}"
            await channel.send(text[:2000], allowed_mentions=MENTION)
            return
        limit = await self._upload_limit(origin.guild_id)
        film = None
        if record.film_path and limit > 0:
            film = await asyncio.to_thread(_read_limited_file, record.film_path, limit)
        text = f"{mention} your film is ready ({record.story.title or record.story_id})."
        file = discord.File(io.BytesIO(film), filename=f"{record.story_id}.mp4") if film is not None else None
        link = record.film_url or "It is too large to attach here and no [storage] keeps a copy."
        await _post(channel, text, file, link)

    async def _edit_story_embed(self, record: StoryRecord) -> None:
        origin = record.origin
        if isinstance(origin, DiscordOrigin) and origin.message_id is not None:
            await self._channel(origin).get_partial_message(origin.message_id).edit(embed=story_embed(record))

    def _channel(self, origin: DiscordOrigin) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(origin.channel_id, guild_id=origin.guild_id)

    async def _edit_embed(self, record: TaskRecord) -> None:
        origin = record.origin
        if not isinstance(origin, DiscordOrigin) or origin.message_id is None:
            return
        channel = self.client.get_partial_messageable(origin.channel_id, guild_id=origin.guild_id)
        embed = task_embed(record, expected_at=await self.service.expected_finish(record))
        await channel.get_partial_message(origin.message_id).edit(embed=embed)

    async def _upload_limit(self, guild_id: int | None) -> int:
        """Bytes that may be attached here: the guild's limit, capped by the configured one."""
        configured = int(self.settings.attach_videos_up_to_mb * 1024 * 1024)
        if guild_id is None:
            return min(configured, discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES)
        if guild_id not in self._upload_limits:
            guild = self.client.get_guild(guild_id) or await self.client.fetch_guild(guild_id)
            self._upload_limits[guild_id] = guild.filesize_limit
        return min(configured, self._upload_limits[guild_id])

    async def _attachment(self, record: TaskRecord, guild_id: int | None) -> discord.File | None:
        """The MP4 as an attachment when it fits the upload limit; None means post the URL."""
        limit = await self._upload_limit(guild_id)
        if limit <= 0 or not record.video_url:
            return None
        if record.local_path:
            data = await asyncio.to_thread(_read_limited_file, record.local_path, limit)
        else:
            try:
                data = await self.service.videos.to_memory(record.video_url, max_bytes=limit)
            except KlingError as exc:  # too large, refused or gone: post the URL instead
                log.info("not attaching the video of %s: %s", record.task_id, exc.message)
                return None
        return None if data is None else discord.File(io.BytesIO(data), filename=f"{record.task_id}.mp4")


@contextlib.asynccontextmanager
async def rest_notifier(service: KlingService, token: str) -> AsyncIterator[DiscordNotifier]:
    """A Discord notifier for a poller worker: the bot token over REST, no gateway connection, no commands."""
    client = discord.Client(intents=discord.Intents.none())
    await client.login(token)
    try:
        yield DiscordNotifier(client, service)
    finally:
        await client.close()


async def _post(
    channel: discord.PartialMessageable,
    text: str,
    file: discord.File | None,
    link: str | None,
    *,
    view: discord.ui.View | None = None,
) -> None:
    """The result with its video attached, or with a link where there is no file or Discord refuses it as too
    large (413: guilds' limits differ from what Discord reports, and Discord's own figures have disagreed)."""
    options: dict[str, Any] = {"allowed_mentions": MENTION} | ({"view": view} if view is not None else {})
    if file is not None:
        try:
            await channel.send(text, files=[file], **options)
            return
        except discord.HTTPException as exc:
            if exc.status != 413:
                raise
            log.info("Discord refused the video as too large (413); posting its link instead")
    await channel.send(f"{text} {link or ''}".strip(), **options)


def _read_limited_file(path: str, limit: int) -> bytes | None:
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError:  # written by a worker on another machine: the URL is posted instead
        return None
    return None if len(data) > limit else data
