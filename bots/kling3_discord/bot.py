"""The Discord client: sharding, the in-process poller with the Discord notifier, command sync."""

from __future__ import annotations

import contextlib

import discord
from discord import app_commands

from kling3_tools.config import Settings
from kling3_tools.service import KlingService

from .characters import character_menu
from .commands import KlingCommands
from .flow import VideoFlow
from .notifier import DiscordNotifier
from .policy import Policy
from .views import TaskButton


class KlingBot(discord.AutoShardedClient):
    """Sharded like any large bot: Discord's recommended shard count by default, or `[discord] shard_count`
    with a slice of `shard_ids` per process when one bot runs as several processes."""

    def __init__(self, service: KlingService, settings: Settings, *, sync_commands: bool = True) -> None:
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # a text-only bot needs no voice
        intents = discord.Intents.none()
        intents.guilds = True  # guild objects (upload limits, roles) arrive with the gateway's GUILD_CREATE
        super().__init__(
            intents=intents,
            allowed_mentions=discord.AllowedMentions(users=True, everyone=False),
            shard_count=settings.discord.shard_count or None,
        )
        if settings.discord.shard_ids:  # checked against shard_count by the settings
            self.shard_ids = settings.discord.shard_ids
        self.service = service
        self.settings = settings
        self.flow = VideoFlow(service, settings, Policy(settings.discord))
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(KlingCommands(self.flow))
        self.tree.add_command(character_menu())
        self.sync_commands = sync_commands
        self._polling = contextlib.AsyncExitStack()  # the in-process poller, once set up

    async def setup_hook(self) -> None:
        self.add_dynamic_items(TaskButton)
        self.service.register(DiscordNotifier(self, self.service))
        await self._polling.enter_async_context(self.service.polling())
        if self.sync_commands:
            await self._sync()

    async def _sync(self) -> None:
        """Guild sync is instant (use it while testing); global sync can take up to an hour to show."""
        guild_ids = self.settings.discord.sync_guild_ids
        for guild_id in guild_ids:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        if not guild_ids:
            await self.tree.sync()

    async def close(self) -> None:
        await self._polling.aclose()
        await super().close()
