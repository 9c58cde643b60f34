"""The server owner's rules: where /kling works, who may spend, how much and how often.

Every check returns a sentence for the user or raises nothing; the commands
turn a refusal into an ephemeral message. Budgets and limits are counted from
the task store, so they hold across restarts and across bot processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kling3_tools.config import DiscordSettings
from kling3_tools.errors import SpendingRefusedError
from kling3_tools.guard import SpendingGuard, Verdict
from kling3_tools.store import TaskStore


class Refused(Exception):
    """A rule said no; the message is for the user."""


@dataclass
class Policy:
    settings: DiscordSettings
    store: TaskStore
    _last_use: dict[int, float] = field(default_factory=dict)

    @property
    def guard(self) -> SpendingGuard:
        return SpendingGuard(
            self.store,
            daily_credit_budget=self.settings.daily_credit_budget_per_user,
            confirm_above_credits=self.settings.confirm_above_credits,
        )

    def check_place(self, guild_id: int | None, channel_id: int | None) -> None:
        """Guild and channel allowlists; direct messages only when enabled."""
        if guild_id is None:
            if not self.settings.allow_dms:
                raise Refused("/kling is not available in direct messages here. Use it in a server channel.")
            return
        if self.settings.guild_ids and guild_id not in self.settings.guild_ids:
            raise Refused("/kling is not enabled in this server.")
        if self.settings.channel_ids and channel_id not in self.settings.channel_ids:
            channels = ", ".join(f"<#{c}>" for c in self.settings.channel_ids)
            raise Refused(f"/kling is not enabled in this channel. Try {channels}.")

    async def check_spend(self, user_id: int, credits: int) -> Verdict:
        """Cooldown, tasks running at once, the daily budget; CONFIRM when above the threshold."""
        wait = self.settings.cooldown_seconds - (time.monotonic() - self._last_use.get(user_id, -1e9))
        if wait > 0:
            raise Refused(f"Slow down: you can start another video in {wait:.0f} s.")
        limit = self.settings.max_concurrent_tasks_per_user
        if limit:
            running = await self.store.recent(status="running", origin_kind="discord", user_id=user_id, limit=limit)
            if len(running) >= limit:
                raise Refused(f"You already have {len(running)} videos in progress (the limit is {limit}). "
                              "Wait for one to finish.")  # fmt: skip
        try:
            return await self.guard.check(credits, origin_kind="discord", user_id=user_id)
        except SpendingRefusedError as exc:
            raise Refused(exc.message.replace("daily_credit_budget", "daily_credit_budget_per_user")) from None

    def started(self, user_id: int) -> None:
        self._last_use[user_id] = time.monotonic()

    async def left_today(self, user_id: int) -> int | None:
        return await self.guard.left_today(origin_kind="discord", user_id=user_id)

    def is_admin(self, role_names: list[str]) -> bool:
        return bool(self.settings.admin_role) and self.settings.admin_role in role_names
