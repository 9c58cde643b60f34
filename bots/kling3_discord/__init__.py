"""The Discord bot: `kling3-discord` / `kling3 discord`. Token from DISCORD_TOKEN; the rest from `[discord]`.

It runs the poller in-process with a Discord notifier, so results are posted
to the channel even when they arrive after a restart.

bot (the client) · flow (starting a video) · commands (/kling) · views (result
buttons) · embeds · notifier (delivery) · policy (the owner's rules).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import discord

from kling3_tools.config import ConfigError, Settings
from kling3_tools.errors import KlingError
from kling3_tools.service import KlingService

from .bot import KlingBot

__all__ = ["KlingBot", "main", "run"]

log = logging.getLogger("kling3_tools.discord")


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
