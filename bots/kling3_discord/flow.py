"""The bot's one use case: start a video for a member. Check, confirm when dear, post the public embed,
submit through the ledger. Commands and buttons reach it through `flow_of(interaction.client)`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import discord

from kling3_tools.adapters.assets.inputs import LocalFiles
from kling3_tools.config import Settings
from kling3_tools.domain.errors import KlingError, OutcomeUnknownError, RequestValidationError, SpendingRefusedError
from kling3_tools.domain.records import DiscordOrigin, owner_of
from kling3_tools.domain.story import Story
from kling3_tools.domain.story_plan import plan
from kling3_tools.service import KlingService

from .embeds import not_started_embed, plan_text, starting_embed, story_embed, task_embed, unknown_embed
from .policy import Policy, Refused

AttachmentKind = Literal["image", "video"]
MAX_STORY_BYTES = 64 * 1024
Uploads = Sequence[tuple[discord.Attachment, AttachmentKind]]


class ConfirmView(discord.ui.View):
    """Confirm / Cancel before spending, for the requester only (the message is ephemeral)."""

    def __init__(self, *, timeout: float = 120) -> None:
        super().__init__(timeout=timeout)
        self.confirmed = False

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.green)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        self.confirmed = True
        await interaction.response.edit_message(content="Starting…", view=None)
        self.stop()

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.grey)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        await interaction.response.edit_message(content="Cancelled. Nothing was spent.", view=None)
        self.stop()


@dataclass(frozen=True)
class VideoFlow:
    service: KlingService
    settings: Settings
    policy: Policy

    async def start_video(
        self, interaction: discord.Interaction, fields: dict[str, Any], uploads: Uploads = ()
    ) -> None:
        """Acknowledge, check, confirm when dear, post the public embed, submit through the ledger. Spends credits."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user_id = interaction.user.id
        limit = self.policy.limit(user_id)
        try:
            self.policy.check_place(interaction.guild_id, interaction.channel_id)
            self._check_uploads(uploads)
            if self.settings.storage.url:  # copies in storage: the buttons outlive Discord's links (about 24 h)
                fields = await self._attached(interaction, fields, uploads)
            checked = await self.service.examine(fields, ATTACHED_ONLY, owner=member(user_id))
            credits = checked.request.estimated_credits(self.service.prices)
            await self.service.check_spend(credits, [limit])  # before a public embed is posted
        except (Refused, RequestValidationError, SpendingRefusedError) as exc:
            await interaction.followup.send(str(exc), ephemeral=True)
            return
        except _NotFetched:
            return
        if self.policy.needs_confirmation(credits):
            confirm = ConfirmView()
            question = f"This will spend **{credits} {self.service.unit}** ({checked.request.type}). Continue?"
            await interaction.followup.send(question, view=confirm, ephemeral=True)
            if await confirm.wait() or not confirm.confirmed:
                return
        try:
            request = await self.service.prepare(checked)  # the attachments put in storage
        except Exception as exc:  # the bucket: one line, nothing spent
            await _not_started(interaction, exc)
            return
        assert interaction.channel_id is not None
        channel = interaction.client.get_partial_messageable(interaction.channel_id, guild_id=interaction.guild_id)
        message = await channel.send(embed=starting_embed(request.summary, user_id))
        origin = DiscordOrigin(
            guild_id=interaction.guild_id, channel_id=interaction.channel_id, message_id=message.id, user_id=user_id
        )
        try:
            record = await self.service.submit(request, origin, limits=[limit])
        except OutcomeUnknownError as exc:
            await message.edit(embed=unknown_embed(exc.message))
            await interaction.followup.send(f"Outcome unknown, {credits} {self.service.unit} may have been charged: "
                                            f"{exc.message}"[:2000], ephemeral=True)  # fmt: skip
            return
        except KlingError as exc:
            await message.edit(embed=not_started_embed(exc.message))
            await interaction.followup.send(f"Not started: {exc.message}", ephemeral=True)
            return
        await message.edit(embed=task_embed(record, expected_at=await self.service.expected_finish(record)))
        await interaction.followup.send(
            f"Started `{record.task_id}` ({credits} {self.service.unit}). The video is posted here when it is ready.",
            ephemeral=True,
        )

    async def start_story(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        """Read and plan the story file, show the plan and total with Confirm, then start it (its whole cost
        reserved at once) under one public embed that follows it. Spends credits."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user_id = interaction.user.id
        limit = self.policy.limit(user_id)
        try:
            self.policy.check_place(interaction.guild_id, interaction.channel_id)
            if file.size > MAX_STORY_BYTES:
                raise Refused(f"`{file.filename}` is {file.size} bytes; a story file is at most {MAX_STORY_BYTES}.")
            story = Story.from_text(await file.read(), name=file.filename)
            story_plan = plan(story, self.service.prices, self.settings.takes_fields)
            await self.service.check_spend(story_plan.total, [limit], dearest=story_plan.dearest)
        except (Refused, RequestValidationError, SpendingRefusedError, discord.HTTPException) as exc:
            await interaction.followup.send(f"Not started, nothing was spent: {exc}"[:2000], ephemeral=True)
            return
        confirm = ConfirmView()
        await interaction.followup.send(
            f"{plan_text(story_plan, self.service.unit)}\nContinue?", view=confirm, ephemeral=True
        )
        if await confirm.wait() or not confirm.confirmed:
            return
        assert interaction.channel_id is not None
        channel = interaction.client.get_partial_messageable(interaction.channel_id, guild_id=interaction.guild_id)
        message = await channel.send(embed=starting_embed(story_plan.story.title or file.filename, user_id))
        origin = DiscordOrigin(
            guild_id=interaction.guild_id, channel_id=interaction.channel_id, message_id=message.id, user_id=user_id
        )
        try:
            record = await self.service.start_story(story_plan.story, origin, limits=[limit])
        except KlingError as exc:
            await message.edit(embed=not_started_embed(exc.message))
            await interaction.followup.send(f"Not started: {exc.message}", ephemeral=True)
            return
        await message.edit(embed=story_embed(record))
        await interaction.followup.send(
            f"Started `{record.story_id}` ({story_plan.total} {self.service.unit} reserved). The film is posted here.",
            ephemeral=True,
        )

    async def make_character(
        self, interaction: discord.Interaction, name: str, images: Sequence[discord.Attachment], description: str = ""
    ) -> None:
        """Make a character of the member's from attached images (read now: Discord's links expire)."""
        if not interaction.response.is_done():
            await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            self.policy.check_place(interaction.guild_id, interaction.channel_id)
            self._check_uploads([(image, "image") for image in images])
            contents: list[str | Path | bytes] = [await image.read() for image in images]
            made = await self.service.characters.create(
                member(interaction.user.id), name, contents, description, files=ATTACHED_ONLY
            )
        except (Refused, KlingError, discord.HTTPException) as exc:
            reason = exc.message if isinstance(exc, KlingError) else str(exc)
            await interaction.followup.send(f"No character was made: {reason}"[:2000], ephemeral=True)
            return
        await interaction.followup.send(
            f"Made **{made.name}**. Place it in a video with `characters: {made.name}` (O3 models).", ephemeral=True
        )

    async def left_today(self, user_id: int) -> int | None:
        """Credits left of the user's 24-hour budget, or None when there is no budget."""
        limit = self.policy.limit(user_id)
        return limit.left(await self.service.usage(limit)) if limit.daily_credits else None

    async def _attached(
        self, interaction: discord.Interaction, fields: dict[str, Any], uploads: Uploads
    ) -> dict[str, Any]:
        """`fields` with the attachments' contents, to be checked and kept; Discord's CDN failing is one line."""
        try:
            return await _with_contents(fields, uploads)
        except Exception as exc:
            await _not_started(interaction, exc)
            raise _NotFetched from exc

    def _check_uploads(self, uploads: Uploads) -> None:
        limit_mb = self.settings.discord.max_attachment_mb
        for attachment, kind in uploads:
            content_type = attachment.content_type or ""
            if not content_type.startswith(f"{kind}/"):
                raise Refused(f"`{attachment.filename}` is not an {kind} ({content_type or 'unknown type'}).")
            if attachment.size > limit_mb * 1024 * 1024:
                raise Refused(
                    f"`{attachment.filename}` is {attachment.size / 1e6:.1f} MB; the limit is {limit_mb:g} MB."
                )


ATTACHED_ONLY = LocalFiles(paths=False, refusal="only attachments and URLs are accepted")


class _NotFetched(Exception):
    """An attachment could not be read from Discord (said to the user already)."""


async def _not_started(interaction: discord.Interaction, exc: Exception) -> None:
    reason = exc.message if isinstance(exc, KlingError) else f"{type(exc).__name__}: {exc}"
    await interaction.followup.send(f"Not started, nothing was spent: {reason}"[:2000], ephemeral=True)


async def _with_contents(fields: dict[str, Any], uploads: Uploads) -> dict[str, Any]:
    """`fields` with each attachment's URL replaced by its content, to be checked and kept in storage."""
    contents = {attachment.url: await attachment.read() for attachment, _ in uploads}
    return {
        name: [contents.get(v, v) for v in value] if isinstance(value, list) else contents.get(value, value)
        for name, value in fields.items()
    }


def member(user_id: int) -> str:
    """A member as the owner of their videos and characters."""
    return owner_of(DiscordOrigin(guild_id=None, channel_id=0, user_id=user_id))


def flow_of(client: discord.Client) -> VideoFlow:
    """The flow of the bot that received an interaction."""
    flow = getattr(client, "flow", None)
    if not isinstance(flow, VideoFlow):
        raise TypeError(f"{type(client).__name__} has no VideoFlow")
    return flow
