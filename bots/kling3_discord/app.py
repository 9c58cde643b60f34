"""The bot's process: its service opened, logged in, stopped gracefully (`run`, `main`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator

import discord

from kling3_tools import ops
from kling3_tools.config import Settings
from kling3_tools.config_sources import ConfigError, discord_token
from kling3_tools.launch import (
    EXIT_BAD_INPUT,
    exempt_loaded_objects_from_gc,
    load_settings,
    on_stop_signals,
    run_to_end,
    say_error,
)
from kling3_tools.service import KlingService
from kling3_tools.workflows.schedule import SchedulePolicy

from .bot import KlingBot

log = logging.getLogger("kling3_tools.discord")


@contextlib.asynccontextmanager
async def opened(
    settings: Settings, *, sandbox: bool = False, schedule: SchedulePolicy | None = None
) -> AsyncIterator[KlingBot]:
    """The bot on its service (with `/healthz`, `/readyz` and `/metrics` when `[metrics] listen` is set), not
    yet logged in; its poller starts at login."""
    observer = ops.observer_for(settings, "discord")
    async with (
        KlingService.open(
            settings, sandbox=sandbox, schedule=schedule, observer=observer, wait_for_store=True
        ) as service,
        ops.exposed(service),
    ):
        yield KlingBot(service, settings)


async def run_bot(settings: Settings, token: str, *, sandbox: bool) -> None:
    """Until Ctrl-C, or SIGTERM (`docker stop`, Kubernetes), which closes the bot as gracefully: its poller
    stops and hands back its leases, the store and the pool close (Python's own handler ended the process).
    A SIGTERM while it starts stops it as cleanly; a second one ends the process at once."""
    stop = Stop()
    on_stop_signals(stop.request, (signal.SIGTERM,))
    async with opened(settings, sandbox=sandbox) as bot, bot:
        stop.bot = bot
        if stop.requested:
            return
        exempt_loaded_objects_from_gc()
        try:
            await bot.start(token)
        except Exception:
            if not stop.requested:  # a stop during login: its requests end with the closed session
                raise


class Stop:
    """SIGTERM's graceful stop: close the bot, once it exists."""

    def __init__(self) -> None:
        self.requested = False
        self.bot: KlingBot | None = None
        self.closing: asyncio.Task[None] | None = None

    def request(self) -> None:
        self.requested = True
        if self.bot is not None:
            self.closing = asyncio.create_task(self.bot.close())


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(args)
    if settings is None:
        return EXIT_BAD_INPUT
    try:
        token = discord_token()
    except ConfigError as exc:
        say_error(str(exc))
        return EXIT_BAD_INPUT
    if not token:
        say_error("set DISCORD_TOKEN (or DISCORD_TOKEN_FILE) to your bot's token (Discord developer portal → Bot).")
        return EXIT_BAD_INPUT
    if not settings.has_credentials and not args.sandbox:
        say_error(
            "No API key: set KLING_API_KEY (Kling's own API: KLING_ACCESS_KEY and KLING_SECRET_KEY) in the bot's "
            "environment, or start it with --sandbox to try it with no key."
        )
        return EXIT_BAD_INPUT
    return run_to_end(lambda: run_bot(settings, token, sandbox=args.sandbox), log, _explain)


def _explain(exc: Exception) -> str | None:
    if isinstance(exc, discord.LoginFailure):
        return "Discord refused DISCORD_TOKEN."
    if isinstance(exc, OSError):  # aiohttp's connection errors are OSErrors: no network, DNS, a proxy
        return f"cannot reach Discord: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kling3-discord", description="Discord bot: /kling slash commands for Kling 3.0 and O3 videos."
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="use an embedded local sandbox instead of the API: no Kling key, no credits spent",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML config file (default: $KLING_CONFIG)")
    return run(parser.parse_args(argv))
