"""`/kling character …` and the message menu's "Use as character": a member's characters, made from images
attached to a command or to any message, listed and deleted. No API knowledge here: the core makes them."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from kling3_tools.domain.characters import MAX_DESCRIPTION_CHARS, MAX_IMAGES, MAX_NAME_CHARS, MIN_IMAGES
from kling3_tools.domain.errors import KlingError

from .flow import VideoFlow, flow_of, member

Name = app_commands.Range[str, 1, MAX_NAME_CHARS]


class CharacterCommands(app_commands.Group):
    """Characters to place in your videos by name (Kling's own API)."""

    def __init__(self, flow: VideoFlow) -> None:
        super().__init__(name="character", description="Characters to place in your videos by name")
        self.flow = flow

    @app_commands.command(description="Make a character from 2-4 images of it (the first from the front)")
    @app_commands.describe(name="How your videos name it", front="It, from the front", side="It, from another side")
    @app_commands.describe(more="Another view", another="Another view", description="What it is, in a few words")
    async def create(
        self,
        interaction: discord.Interaction,
        name: Name,
        front: discord.Attachment,
        side: discord.Attachment,
        more: discord.Attachment | None = None,
        another: discord.Attachment | None = None,
        description: app_commands.Range[str, 0, MAX_DESCRIPTION_CHARS] | None = None,
    ) -> None:
        images = [image for image in (front, side, more, another) if image is not None]
        await self.flow.make_character(interaction, name, images, description or "")

    @app_commands.command(name="list", description="Your characters")
    async def list_mine(self, interaction: discord.Interaction) -> None:
        mine = await self.flow.service.characters.of(member(interaction.user.id))
        lines = [f"**{c.name}**" + (f" · {c.description}" if c.description else "") for c in mine]
        text = "\n".join(lines) or "You have no characters yet. Try `/kling character create`."
        await interaction.response.send_message(text[:2000], ephemeral=True)

    @app_commands.command(description="Forget one of your characters")
    @app_commands.describe(name="Its name")
    async def delete(self, interaction: discord.Interaction, name: Name) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            gone = await self.flow.service.characters.delete(member(interaction.user.id), name)
        except KlingError as exc:
            await interaction.followup.send(exc.message[:2000], ephemeral=True)
            return
        await interaction.followup.send(f"Deleted **{gone.name}**.", ephemeral=True)


class CharacterModal(discord.ui.Modal, title="Use as character"):
    name: discord.ui.TextInput[CharacterModal] = discord.ui.TextInput(label="Name", max_length=MAX_NAME_CHARS)
    description: discord.ui.TextInput[CharacterModal] = discord.ui.TextInput(
        label="What it is (optional)", required=False, max_length=MAX_DESCRIPTION_CHARS
    )

    def __init__(self, images: list[discord.Attachment]) -> None:
        super().__init__()
        self.images = images

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await flow_of(interaction.client).make_character(
            interaction, self.name.value, self.images, self.description.value or ""
        )


async def use_as_character(interaction: discord.Interaction, message: discord.Message) -> None:
    """The images of any message (2-4, the first from the front) made into one of your characters."""
    images = [a for a in message.attachments if (a.content_type or "").startswith("image/")][:MAX_IMAGES]
    if len(images) < MIN_IMAGES:
        await interaction.response.send_message(
            f"A character is made from {MIN_IMAGES}-{MAX_IMAGES} images; that message has {len(images)}.",
            ephemeral=True,
        )
        return
    await interaction.response.send_modal(CharacterModal(images))


def character_menu() -> app_commands.ContextMenu:
    menu: Any = app_commands.ContextMenu(name="Use as character", callback=use_as_character)
    return menu  # type: ignore[no-any-return]
