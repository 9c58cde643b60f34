"""The Discord bot: `kling3-discord` / `kling3 discord`. Token from DISCORD_TOKEN; the rest from `[discord]`.

It runs the poller in-process with a Discord notifier, so results are posted
to the channel even when they arrive after a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, Literal

import discord
from discord import app_commands

from kling3_tools.config import ConfigError, Settings
from kling3_tools.errors import KlingError, OutcomeUnknownError, RequestValidationError, SpendingRefusedError
from kling3_tools.models import GenerateRequest
from kling3_tools.records import DiscordOrigin
from kling3_tools.service import KlingService

from .commands import KlingCommands
from .notifier import DiscordNotifier, task_embed
from .policy import Policy, Refused
from .views import ConfirmView, TaskButton

log = logging.getLogger("kling3_tools.discord")

AttachmentKind = Literal["image", "video"]


class KlingBot(discord.AutoShardedClient):
    """Sharded like any large bot: Discord's recommended shard count by default, or `[discord] shard_count`
    with a slice of `shard_ids` per process when one bot runs as several processes."""

    def __init__(self, service: KlingService, settings: Settings, *, sync_commands: bool = True) -> None:
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
        self.policy = Policy(settings.discord)
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(KlingCommands(self))
        self.sync_commands = sync_commands
        self._following = contextlib.AsyncExitStack()  # the in-process poller, once set up

    async def setup_hook(self) -> None:
        self.add_dynamic_items(TaskButton)
        self.service.register(DiscordNotifier(self, self.service))
        await self._following.enter_async_context(self.service.following())
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
        await self._following.aclose()
        await super().close()

    async def start_video(
        self,
        interaction: discord.Interaction,
        fields: dict[str, Any],
        *,
        attachments: Sequence[tuple[discord.Attachment, AttachmentKind]] = (),
    ) -> None:
        """Acknowledge, check, confirm when dear, post the public embed, submit through the ledger. Spends credits."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user_id = interaction.user.id
        limit = self.policy.limit(user_id)
        try:
            self.policy.check_place(interaction.guild_id, interaction.channel_id)
            self._check_attachments(attachments)
            request = GenerateRequest.build(**fields)
            credits = request.estimated_credits()
            await self.service.check_spend(credits, [limit])  # before a public embed is posted
        except (Refused, RequestValidationError, SpendingRefusedError) as exc:
            await interaction.followup.send(str(exc), ephemeral=True)
            return
        if self.policy.needs_confirmation(credits):
            confirm = ConfirmView()
            question = f"This will spend **{credits} credits** ({request.type}). Continue?"
            await interaction.followup.send(question, view=confirm, ephemeral=True)
            if await confirm.wait() or not confirm.confirmed:
                return
        assert interaction.channel_id is not None
        channel = self.get_partial_messageable(interaction.channel_id, guild_id=interaction.guild_id)
        starting = discord.Embed(
            title="Kling video · starting", description=request.prompt[:300], colour=discord.Colour.light_grey()
        )
        starting.add_field(name="Requested by", value=f"<@{user_id}>")
        message = await channel.send(embed=starting)
        origin = DiscordOrigin(
            guild_id=interaction.guild_id, channel_id=interaction.channel_id, message_id=message.id, user_id=user_id
        )
        try:
            record = await self.service.submit(request, origin, limits=[limit])
        except OutcomeUnknownError as exc:
            unknown = discord.Embed(
                title="Kling video · outcome unknown (may have been charged)",
                description=exc.message[:4000],
                colour=discord.Colour.orange(),
            )
            await message.edit(embed=unknown)
            await interaction.followup.send(f"Outcome unknown, {credits} credits may have been charged: "
                                            f"{exc.message}"[:2000], ephemeral=True)  # fmt: skip
            return
        except KlingError as exc:
            failed = discord.Embed(
                title="Kling video · not started", description=exc.message, colour=discord.Colour.red()
            )
            await message.edit(embed=failed)
            await interaction.followup.send(f"Not started: {exc.message}", ephemeral=True)
            return
        await message.edit(embed=task_embed(record, expected_at=await self.service.expected_finish(record)))
        await interaction.followup.send(
            f"Started `{record.task_id}` ({credits} credits). The video will be posted here when it is ready.",
            ephemeral=True,
        )

    async def left_today(self, user_id: int) -> int | None:
        """Credits left of the user's 24-hour budget, or None when there is no budget."""
        limit = self.policy.limit(user_id)
        return limit.left(await self.service.usage(limit)) if limit.daily_credits else None

    def _check_attachments(self, attachments: Sequence[tuple[discord.Attachment, AttachmentKind]]) -> None:
        limit_mb = self.settings.discord.max_attachment_mb
        for attachment, kind in attachments:
            content_type = attachment.content_type or ""
            if not content_type.startswith(f"{kind}/"):
                raise Refused(f"`{attachment.filename}` is not an {kind} ({content_type or 'unknown type'}).")
            if attachment.size > limit_mb * 1024 * 1024:
                raise Refused(
                    f"`{attachment.filename}` is {attachment.size / 1e6:.1f} MB; the limit is {limit_mb:g} MB."
                )


async def run_bot(settings: Settings, token: str, *, sandbox: bool) -> None:
    async with KlingService.open(settings, sandbox=sandbox) as service:
        bot = KlingBot(service, settings)
        async with bot:
            await bot.start(token)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        print("error: set DISCORD_TOKEN to your bot's token (Discord developer portal → Bot).", file=sys.stderr)
        return 2
    try:
        settings = Settings.load(args.config, base_url=getattr(args, "base_url", None))
    except (FileNotFoundError, ConfigError) as exc:  # never echoing a value
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_bot(settings, token, sandbox=args.sandbox))
    except discord.LoginFailure:
        print("error: Discord refused DISCORD_TOKEN.", file=sys.stderr)
        return 1
    except OSError as exc:  # aiohttp's connection errors are OSErrors: no network, DNS, a proxy
        print(f"error: cannot reach Discord: {exc}", file=sys.stderr)
        return 1
    except KlingError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the user; the traceback at debug level
        log.debug("unexpected error", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kling3-discord", description="Discord bot: /kling slash commands for Kling 3.0 and O3 videos."
    )
    parser.add_argument("--sandbox", action="store_true", help="use an embedded sandbox: no Kling key, no cost")
    parser.add_argument("--config", metavar="PATH", help="TOML config file (default: $KLING_CONFIG)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
