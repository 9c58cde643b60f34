"""Spending limits shared by the front ends: refuse before the API is called, never after."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from .errors import SpendingRefusedError
from .store import TaskStore

DAY_SECONDS = 24 * 3600


class Verdict(StrEnum):
    GO = "go"
    CONFIRM = "confirm"  # within the limits, but above the threshold a person must approve


@dataclass(frozen=True, slots=True)
class SpendingGuard:
    """Hard limits (per video, per rolling 24 hours) and a confirmation threshold; 0 disables each."""

    store: TaskStore
    max_credits_per_video: int = 0
    daily_credit_budget: int = 0
    confirm_above_credits: int = 0

    async def spent_today(self, *, origin_kind: str | None = None, user_id: int | None = None) -> int:
        """Credits of tasks submitted in the last 24 hours (failed ones excluded)."""
        return await self.store.credits_since(time.time() - DAY_SECONDS, origin_kind=origin_kind, user_id=user_id)

    def left_after(self, spent: int) -> int | None:
        """Credits left in the 24-hour budget once `spent` is counted, or None when there is no budget."""
        return max(0, self.daily_credit_budget - spent) if self.daily_credit_budget else None

    async def left_today(self, *, origin_kind: str | None = None, user_id: int | None = None) -> int | None:
        """Credits left in the 24-hour budget, or None when there is no budget (then nothing is queried)."""
        if not self.daily_credit_budget:
            return None
        return self.left_after(await self.spent_today(origin_kind=origin_kind, user_id=user_id))

    async def check(self, credits: int, *, origin_kind: str | None = None, user_id: int | None = None) -> Verdict:
        """Raise `SpendingRefusedError` (saying the numbers) when a hard limit forbids `credits`."""
        if self.max_credits_per_video and credits > self.max_credits_per_video:
            raise SpendingRefusedError(
                f"This video would cost {credits} credits, above the limit of {self.max_credits_per_video} "
                "credits per video (max_credits_per_video). Choose a shorter, silent or cheaper model, "
                "or raise the limit."
            )
        if self.daily_credit_budget:
            spent = await self.spent_today(origin_kind=origin_kind, user_id=user_id)
            if spent + credits > self.daily_credit_budget:
                raise SpendingRefusedError(
                    f"This video would cost {credits} credits, but only {self.left_after(spent)} "
                    f"of the {self.daily_credit_budget}-credit budget for 24 hours are left ({spent} spent). "
                    "Try later, or raise daily_credit_budget."
                )
        if self.confirm_above_credits and credits > self.confirm_above_credits:
            return Verdict.CONFIRM
        return Verdict.GO
