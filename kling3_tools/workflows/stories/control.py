"""Stories from the front ends' side: start one (planned, then reserved whole), read them, retry a shot,
reopen one after a shot was resolved by hand. The pollers advance them (`runner`)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...domain.errors import KlingError
from ...domain.ledger import Attempt, AttemptState, SpendLimit
from ...domain.records import AnyOrigin, CliOrigin, Delivery
from ...domain.story import Story
from ...domain.story_plan import plan
from ...domain.story_record import ShotRecord, ShotState, StoryRecord, StoryState
from .runner import StoryParts, StoryRunner, media_module, needs_of

log = logging.getLogger("kling3_tools.stories")


class Stories:
    """A service's stories: `service.stories`."""

    def __init__(self, parts: StoryParts) -> None:
        self.parts = parts
        self.store = parts.spending.store
        self.runner = StoryRunner(parts)  # what the pollers call

    # --- front ends --------------------------------------------------------------------

    async def start(
        self,
        story: Story,
        origin: AnyOrigin | None = None,
        *,
        limits: Sequence[SpendLimit] = (),
        film_path: str | Path | None = None,
    ) -> StoryRecord:
        """Plan the story, then reserve the whole of it in the ledger (all or nothing) and record it; the
        pollers do the rest. Raises `RequestValidationError` (every problem), `SpendingRefusedError` or
        `StoreError`, with nothing spent."""
        story_plan = plan(story, self.parts.spending.prices, self.parts.spending.client.provider.takes_fields)
        media_module()  # the film needs PyAV: refused now, before anything is reserved, when it is missing
        if self.parts.assets is None and any(r.still for s in story.shots for _, _, r in story.references(s)):
            raise KlingError(
                "Not started, nothing was spent: a still (`@shot.last_frame`) must be hosted where the API can "
                "fetch it; set [storage] url (see the README) or use `--sandbox`."
            )
        self.parts.check_ready_to_spend()
        story_id = StoryRecord.new_id()
        origin = (origin or CliOrigin()).model_copy(update={"story_id": story_id})
        attempts = {
            shot_id: Attempt.new(
                request,
                api_url=self.parts.spending.api_url,
                origin=origin,
                deadline=0,
                state=AttemptState.RESERVED,
                prices=self.parts.spending.prices,
            )
            for shot_id, request in story_plan.requests.items()
        }
        record = StoryRecord(
            story_id=story_id,
            api_url=self.parts.spending.api_url,
            story=story,
            origin=origin,
            shots={i: ShotRecord(attempt_id=a.attempt_id, credits=a.estimated_credits) for i, a in attempts.items()},
            film_path=str(Path(film_path).expanduser().resolve())
            if film_path
            else str(self.runner.films() / f"{story_id}.mp4"),
        )
        await self.parts.spending.reserved(
            self.store.reserve_story(record, list(attempts.values()), [self.parts.spending.budget, *limits])
        )
        self.parts.wake_pollers()
        return record

    async def get(self, story_id: str) -> StoryRecord | None:
        return await self.store.get_story(story_id)

    async def recent(self, *, limit: int = 20, **filters: Any) -> list[StoryRecord]:
        """Most recent first; `filters` as `TaskStore.recent_stories` takes them (origin kind, user, owner)."""
        return await self.store.recent_stories(limit=limit, **filters)

    async def retry(self, story_id: str, shot_id: str, *, limits: Sequence[SpendLimit] = ()) -> StoryRecord:
        """Run a failed or released shot again, and every shot that needs it: their credits reserved anew
        (all or nothing); a shot whose outcome is unknown must be resolved first (it may exist)."""
        owner = f"retry-{uuid.uuid4().hex[:8]}"
        record = await self._leased(story_id, owner)
        if record is None:
            raise KlingError(f"No story {story_id} (`kling3 story list` shows them).")
        try:
            fresh = await self._rerun(record, shot_id, limits)
        finally:
            saved = await self.store.save_story(record, owner=owner)
        if not saved:  # another worker took the story meanwhile: the new reservations must not linger
            for attempt in fresh:
                await self.store.release_reserved(attempt.attempt_id, "the retry was not recorded")
            raise KlingError(f"{story_id} changed while it was being retried; nothing was spent. Try again.")
        self.parts.wake_pollers()
        log.info("%s: %d shots run again", story_id, len(fresh))
        return record

    async def reopen(self, story_id: str) -> None:
        """Look at a story again after one of its shots was resolved by hand (`kling3 tasks resolve`): it
        may go on, or end again with what the shot became, and is delivered again."""
        owner = f"reopen-{uuid.uuid4().hex[:8]}"
        record = await self._leased(story_id, owner)
        if record is not None:
            _running_again(record)
            await self.store.save_story(record, owner=owner)
            self.parts.wake_pollers()

    async def _leased(self, story_id: str, owner: str) -> StoryRecord | None:
        """The story, leased to `owner` (a poller may hold it for a moment); None when there is none."""
        lease = self.parts.settings.lease_seconds
        for _ in range(50):
            record = await self.store.lease_story(story_id, owner=owner, now=time.time(), lease_seconds=lease)
            if record is not None or await self.store.get_story(story_id) is None:
                return record
            await asyncio.sleep(0.2)
        raise KlingError(f"{story_id} is busy; try again in a moment.")

    async def _rerun(self, record: StoryRecord, shot_id: str, limits: Sequence[SpendLimit]) -> list[Attempt]:
        self.parts.check_ready_to_spend()
        await self.runner.refresh(record)
        shot = record.shots.get(shot_id)
        if shot is None:
            raise KlingError(f"{record.story_id} has no shot `{shot_id}` ({', '.join(record.shots)}).")
        if shot.state is ShotState.UNKNOWN:
            raise KlingError(
                f"Shot `{shot_id}` may have been created and charged ({shot.note}). Resolve it first: "
                f"`kling3 tasks resolve {shot.attempt_id} --task-id ID` or `--release`."
            )
        if shot.state not in (ShotState.FAILED, ShotState.RELEASED):
            raise KlingError(f"Shot `{shot_id}` is {shot.state.value}: only a failed or released shot runs again.")
        story_plan = plan(record.story, self.parts.spending.prices)
        # The shot, the failed shots it needs (it cannot run without them), and every shot that needs those.
        roots = {shot_id} | {i for i in needs_of(story_plan.dependencies, shot_id) if record.shots[i].state.blocks}
        if unknown := [i for i in roots if record.shots[i].state is ShotState.UNKNOWN]:
            raise KlingError(f"Shot `{unknown[0]}` (which `{shot_id}` needs) may have been charged: resolve it first.")
        needing = {i for i in record.shots if roots & (needs_of(story_plan.dependencies, i) | {i})}
        again = [i for i in record.shots if i in needing and record.shots[i].state.blocks]
        fresh = {
            i: Attempt.new(
                story_plan.requests[i],
                api_url=record.api_url,
                origin=record.origin,
                deadline=0,
                state=AttemptState.RESERVED,
                prices=self.parts.spending.prices,
            )
            for i in again
        }
        await self.parts.spending.reserved(
            self.store.reserve_story(None, list(fresh.values()), [self.parts.spending.budget, *limits])
        )
        for i, attempt in fresh.items():
            old = record.shots[i]
            record.shots[i] = ShotRecord(
                attempt_id=attempt.attempt_id,
                credits=attempt.estimated_credits,
                earlier=[*old.earlier, old.task_id or old.attempt_id],  # a failed task may still be billed
            )
        _running_again(record)
        return list(fresh.values())


def _running_again(record: StoryRecord) -> None:
    """Running, due now, its ending to be delivered again."""
    record.state, record.note, record.finished_at, record.due_at = StoryState.RUNNING, None, None, time.time()
    record.delivery, record.delivery_attempts, record.delivery_error = Delivery.PENDING, 0, None
