"""Delivery to Discord from any worker (`kling3 poller`), found through the `kling3_tools.notifiers` entry point:
with DISCORD_TOKEN set, the bot's token over REST (no gateway connection, no commands); without it, nothing.
It imports discord.py only when a token is set."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from kling3_tools.config_sources import ConfigError, discord_token
from kling3_tools.domain.errors import missing_part

if TYPE_CHECKING:
    from kling3_tools.service import KlingService
    from kling3_tools.workflows.notifiers import Notifier


@contextlib.asynccontextmanager
async def worker_notifier(service: KlingService) -> AsyncIterator[Notifier | None]:
    token = discord_token()
    if not token:
        yield None
        return
    try:
        from .notifier import rest_notifier
    except ImportError as exc:
        raise ConfigError(f"DISCORD_TOKEN is set, but {missing_part('delivery to Discord', 'discord', exc)}") from None
    async with rest_notifier(service, token) as notifier:
        yield notifier
