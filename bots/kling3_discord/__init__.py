"""The Discord bot: `kling3-discord` / `kling3 discord`. Token from DISCORD_TOKEN; the rest from `[discord]`.

It runs the poller in-process with a Discord notifier, so results are posted
to the channel even when they arrive after a restart.

bot (the client) · flow (starting a video) · commands (/kling) · views (result
buttons) · embeds · notifier (delivery) · policy (the owner's rules).

Importing the package loads nothing of discord.py (the names below load on first use), so that a worker can
find `delivery` through its entry point without the discord extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import main, opened, run
    from .bot import KlingBot

__all__ = ["KlingBot", "main", "opened", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".app", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
