"""The server owner's rules: where /kling works, who may spend, how much and how often.

Every check returns a sentence for the user or raises nothing; the commands
turn a refusal into an ephemeral message. The spending limits (budget, tasks
at once, cooldown) are a `SpendLimit` per user that the ledger enforces in the
store, so they hold across restarts, across bot processes and under bursts.
"""

from __future__ import annotations

from dataclasses import dataclass

from kling3_tools.config_sections import DiscordSettings
from kling3_tools.domain.ledger import Scope, SpendLimit


class Refused(Exception):
    """A rule said no; the message is for the user."""


@dataclass(frozen=True)
class Policy:
    settings: DiscordSettings

    def limit(self, user_id: int) -> SpendLimit:
        """This user's limits, for the ledger."""
        return SpendLimit(
            "discord",
            Scope(origin_kind="discord", user_id=user_id),
            daily_credits=self.settings.daily_credit_budget_per_user,
            max_running=self.settings.max_concurrent_tasks_per_user,
            cooldown_seconds=self.settings.cooldown_seconds,
            daily_key="daily_credit_budget_per_user",
        )

    def needs_confirmation(self, credits: int) -> bool:
        return bool(self.settings.confirm_above_credits) and credits > self.settings.confirm_above_credits

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

    def is_admin(self, role_names: list[str]) -> bool:
        return bool(self.settings.admin_role) and self.settings.admin_role in role_names
