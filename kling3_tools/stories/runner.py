"""Running a story durably: started as one reservation, then advanced by the pollers.

`Stories.start` reserves every shot's credits at once and writes the story (one transaction); nothing is
sent yet. Each poller sweep then leases the due stories of the kinds it delivers and advances them:

    refresh   each shot's state from its ledger attempt and its task
    release   the reserved shots that need a shot that failed (their credits come back)
    submit    the shots whose inputs now exist: referenced videos as they are, stills made from the clips
              and put in the asset store; each `reserved` → `submitting` once, so a killed worker's
              successor never sends a shot twice (one whose POST went unanswered is `unknown`, never resent)
    film      when every shot of the cut succeeded: the clips stitched into one file, kept in [storage]
    deliver   `story.succeeded` / `story.failed` to the story's origin, retried like a task's delivery

A shot's task carries the story's id in its origin, so the poller hands its end to the story (it wakes
it) rather than to a notifier.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import platformdirs

from .. import downloads, leases
from ..errors import KlingError, install_hint
from ..ledger import Attempt, AttemptState, SpendLimit
from ..models import GenerateRequest, with_urls
from ..poller import DELIVERY_GIVE_UP_SECONDS, MAX_DELIVERY_BACKOFF
from ..records import AnyOrigin, CliOrigin, Delivery, Outcome
from .model import Story
from .plan import plan
from .record import ShotRecord, ShotState, StoryRecord, StoryState

if TYPE_CHECKING:
    from ..service import KlingService

log = logging.getLogger("kling3_tools.stories")

Needs = Callable[[str], set[str]]  # the shots a shot takes an input from
BLOCKING = (ShotState.FAILED, ShotState.RELEASED, ShotState.UNKNOWN)
CLAIM_LIMIT = 4  # stories advanced by one sweep


class Stories:
    """A service's stories: `service.stories`."""

    def __init__(self, service: KlingService) -> None:
        self.service = service
        self.store = service.store

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
        story_plan = plan(story)
        if self.service.assets is None and any(r.still for s in story.shots for _, _, r in story.references(s)):
            raise KlingError(
                "Not started, nothing was spent: a still (`@shot.last_frame`) must be hosted where the API can "
                "fetch it; set [storage] url (see the README) or use `--sandbox`."
            )
        self.service.check_following()
        story_id = StoryRecord.new_id()
        origin = (origin or CliOrigin()).model_copy(update={"story_id": story_id})
        attempts = {
            shot_id: Attempt.new(
                request, api_url=self.service.api_url, origin=origin, deadline=0, state=AttemptState.RESERVED
            )
            for shot_id, request in story_plan.requests.items()
        }
        record = StoryRecord(
            story_id=story_id,
            api_url=self.service.api_url,
            story=story,
            origin=origin,
            shots={i: ShotRecord(attempt_id=a.attempt_id, credits=a.estimated_credits) for i, a in attempts.items()},
            film_path=str(Path(film_path).expanduser().resolve())
            if film_path
            else str(self._films() / f"{story_id}.mp4"),
        )
        await self.service.reserved(
            self.store.reserve_story(record, list(attempts.values()), [self.service.budget, *limits])
        )
        self.service.wake_pollers()
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
        for _ in range(50):  # a poller may hold the story for a moment
            record = await self.store.lease_story(
                story_id, owner=owner, now=time.time(), lease_seconds=self.service.settings.poller.lease_seconds
            )
            if record is not None or await self.store.get_story(story_id) is None:
                break
            await asyncio.sleep(0.2)
        else:
            raise KlingError(f"{story_id} is busy; try again in a moment.")
        if record is None:
            raise KlingError(f"No story {story_id} (`kling3 story list` shows them).")
        try:
            attempts = await self._rerun(record, shot_id, limits)
        finally:
            await self.store.save_story(record, owner=owner)
        self.service.wake_pollers()
        log.info("%s: %s run again", story_id, ", ".join(attempts))
        return record

    async def _rerun(self, record: StoryRecord, shot_id: str, limits: Sequence[SpendLimit]) -> list[str]:
        await self._refresh(record)
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
        story_plan = plan(record.story)
        again = [i for i in record.shots if i == shot_id or shot_id in _needs(story_plan.dependencies, i)]
        again = [i for i in again if record.shots[i].state in BLOCKING]
        fresh = {
            i: Attempt.new(
                story_plan.requests[i],
                api_url=record.api_url,
                origin=record.origin,
                deadline=0,
                state=AttemptState.RESERVED,
            )
            for i in again
        }
        await self.service.reserved(
            self.store.reserve_story(None, list(fresh.values()), [self.service.budget, *limits])
        )
        for i, attempt in fresh.items():
            record.shots[i] = ShotRecord(attempt_id=attempt.attempt_id, credits=attempt.estimated_credits)
        record.state, record.note, record.finished_at, record.due_at = StoryState.RUNNING, None, None, time.time()
        record.delivery, record.delivery_attempts, record.delivery_error = Delivery.PENDING, 0, None
        return again

    # --- the pollers' side ---------------------------------------------------------------

    async def sweep(self, owner: str, kinds: list[str]) -> None:
        """Lease the due stories of these kinds and advance each (called from a poller's sweep)."""
        lease = self.service.settings.poller.lease_seconds
        claimed = await self.store.claim_stories(
            owner=owner,
            now=time.time(),
            lease_seconds=lease,
            limit=CLAIM_LIMIT,
            api_url=self.service.api_url,
            kinds=kinds,
        )
        await asyncio.gather(*(self._work(owner, record) for record in claimed))

    async def _work(self, owner: str, record: StoryRecord) -> None:
        lease = self.service.settings.poller.lease_seconds
        before = record.summary()

        async def renew(until: float) -> bool:
            return await self.store.renew_story(record.story_id, owner=owner, until=until)

        try:
            async with leases.kept(renew, lease, record.story_id):
                await self.advance(record)
        except Exception as exc:  # one story's trouble must not stop the others: it is looked at again later
            log.warning("story %s: %s: %s; trying again later", record.story_id, type(exc).__name__, exc)
            record.due_at = time.time() + self.service.scheduler.policy.max_interval
        if not await self.store.save_story(record, owner=owner):
            log.warning("lease on %s was lost before it was saved", record.story_id)
            return
        if record.state is StoryState.RUNNING and record.summary() != before:
            try:
                await self.service.notifiers[record.origin.kind].story_progress(record)
            except Exception as exc:
                log.info("progress of %s not shown: %s", record.story_id, exc)

    async def advance(self, record: StoryRecord) -> None:
        """One step of the story (see the module's docstring); writes nothing itself."""
        now = time.time()
        if record.state is StoryState.RUNNING:
            await self._refresh(record)
            story_plan = plan(record.story)
            await self._release_blocked(record, story_plan.stages, story_plan.dependencies)
            ready = [
                shot_id
                for shot_id, shot in record.shots.items()
                if shot.state is ShotState.WAITING
                and all(record.shots[need].state is ShotState.SUCCEEDED for need in story_plan.dependencies(shot_id))
            ]
            await asyncio.gather(*(self._submit(record, shot_id) for shot_id in ready))
            if all(shot.state.ended for shot in record.shots.values()):
                await self._end(record)
            else:
                record.due_at = now + self.service.scheduler.policy.dense_interval
        if record.state is not StoryState.RUNNING and record.delivery is Delivery.PENDING:
            await self._deliver(record)

    async def _refresh(self, record: StoryRecord) -> None:
        """Each unfinished shot's state, from its attempt in the ledger and its task in the store."""
        now = time.time()
        for shot in record.shots.values():
            if shot.state.ended:
                continue
            attempt = await self.store.get_attempt(shot.attempt_id)
            if attempt is None:
                shot.state, shot.note = ShotState.RELEASED, "its ledger entry is gone"
                continue
            state = attempt.state_at(now)
            if state is AttemptState.SUBMITTED and attempt.task_id:
                shot.task_id = attempt.task_id
                task = await self.service.get(attempt.task_id)
                if task is None or task.outcome is None:
                    shot.state = ShotState.RUNNING
                elif task.outcome is Outcome.SUCCEEDED:
                    shot.state, shot.video_url = ShotState.SUCCEEDED, task.video_url
                else:
                    shot.state = ShotState.FAILED
                    shot.note = task.error_message or f"the task {task.outcome.value.replace('_', ' ')}"
            elif state is AttemptState.UNKNOWN:
                shot.state = ShotState.UNKNOWN
                shot.note = f"{attempt.note or 'no answer'}; it may have been created and charged"
            elif state is AttemptState.RELEASED:
                shot.state, shot.note = ShotState.RELEASED, attempt.note
            else:
                shot.state = ShotState.SUBMITTING if state is AttemptState.SUBMITTING else ShotState.WAITING

    async def _release_blocked(self, record: StoryRecord, stages: list[list[str]], needs: Needs) -> None:
        """Release every reserved shot that needs a shot that cannot give it its input (in stage order, so
        what depends on a released shot is released in the same pass)."""
        for shot_id in (shot_id for stage in stages for shot_id in stage):
            shot = record.shots[shot_id]
            blocked = [need for need in sorted(needs(shot_id)) if record.shots[need].state in BLOCKING]
            if shot.state is ShotState.WAITING and blocked:
                note = f"not sent: shot `{blocked[0]}` {record.shots[blocked[0]].state.value}"
                await self.store.close_attempt(shot.attempt_id, AttemptState.RELEASED, note)
                shot.state, shot.note = ShotState.RELEASED, note

    async def _submit(self, record: StoryRecord, shot_id: str) -> None:
        shot = record.shots[shot_id]
        story = record.story
        try:
            urls: dict[tuple[str, int | None], str] = {}
            for field, index, reference in story.references(story.shot(shot_id)):
                source = record.shots[reference.shot]
                if reference.still:
                    urls[(field, index)] = await self._still(record, reference.shot, reference.still)
                elif source.video_url:
                    urls[(field, index)] = source.video_url
            request = GenerateRequest.build(**with_urls(story.fields(story.shot(shot_id)), urls))
        except KlingError as exc:  # the input could not be made: the shot is not sent, its credits come back
            await self.store.close_attempt(shot.attempt_id, AttemptState.RELEASED, f"not sent: {exc.message}")
            shot.state, shot.note = ShotState.RELEASED, f"not sent: {exc.message}"
            return
        attempt = await self.store.get_attempt(shot.attempt_id)
        if attempt is None:
            return
        try:
            task = await self.service.submit_reserved(attempt, request)
        except KlingError as exc:  # released (the API refused it) or unknown: the ledger tells at the next look
            log.warning("%s: shot %s was not sent: %s", record.story_id, shot_id, exc.message)
            shot.state = ShotState.SUBMITTING
            return
        if task is not None:
            shot.state, shot.task_id = ShotState.RUNNING, task.task_id
            log.info("%s: shot %s sent as %s", record.story_id, shot_id, task.task_id)

    async def _still(self, record: StoryRecord, shot_id: str, which: Literal["last_frame", "first_frame"]) -> str:
        """The URL of a still from a shot's clip, made and hosted once (kept in the story)."""
        source = record.shots[shot_id]
        if which in source.stills:
            return source.stills[which]
        media = _media()
        assets = self.service.assets
        if assets is None or source.video_url is None:
            raise KlingError("no asset store to host the still in")
        work = self._films() / record.story_id
        clip = await self._fetch(source.video_url, work / f"{shot_id}.mp4")
        png = await asyncio.to_thread(media.still, clip, which)
        key = await assets.put(png, content_type="image/png", suffix=".png")
        source.stills[which] = await assets.url(key)
        return source.stills[which]

    async def _end(self, record: StoryRecord) -> None:
        failed = record.failed_shot or next(((i, s) for i, s in record.shots.items() if s.state in BLOCKING), None)
        if failed is not None:
            shot_id, shot = failed
            record.finish(StoryState.FAILED, f"shot `{shot_id}` {shot.state.value}: {shot.note}")
            return
        media = _media()
        work = self._films() / record.story_id
        clips = [
            await self._fetch(str(record.shots[i].video_url), work / f"{number:02d}-{i}.mp4")
            for number, i in enumerate(record.story.film)
        ]
        target = Path(str(record.film_path))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(media.stitch, clips, target, record.story.cut.transition)
        except (media.MediaError, OSError) as exc:
            reason = exc.message if isinstance(exc, KlingError) else f"{target}: {exc.strerror or exc}"
            record.finish(StoryState.FAILED, f"the film could not be made ({reason}); every shot's clip is above")
            return
        if self.service.assets is not None:
            record.film_key = await self.service.assets.put(target, content_type="video/mp4", suffix=".mp4")
            record.film_url = await self.service.assets.url(record.film_key)
        shutil.rmtree(work, ignore_errors=True)
        record.finish(StoryState.SUCCEEDED)
        log.info("%s: film %s", record.story_id, target)

    async def _fetch(self, url: str, target: Path) -> Path:
        if not target.exists():
            service = self.service
            await downloads.to_file(
                service.http, url, target, policy=service.client.url_policy, max_bytes=service.max_download_bytes
            )
        return target

    async def _deliver(self, record: StoryRecord) -> None:
        now = time.time()
        try:
            await self.service.notifiers[record.origin.kind].deliver_story(record)
        except Exception as exc:
            record.delivery_attempts += 1
            record.delivery_error = str(exc) or type(exc).__name__
            if now - (record.finished_at or now) > DELIVERY_GIVE_UP_SECONDS:
                record.delivery, record.due_at = Delivery.GIVEN_UP, None
            else:
                backoff = min(2.0**record.delivery_attempts, MAX_DELIVERY_BACKOFF)
                record.due_at = now + backoff * random.uniform(0.5, 1.0)
            log.info("delivery of %s failed (%s)", record.story_id, record.delivery_error)
            return
        record.delivery, record.delivery_error, record.due_at = Delivery.DELIVERED, None, None

    def _films(self) -> Path:
        media_dir = self.service.settings.poller.media_dir
        return Path(media_dir).expanduser() if media_dir else Path(platformdirs.user_data_dir("kling3")) / "films"


def _needs(dependencies: Needs, shot_id: str) -> set[str]:
    """Every shot `shot_id` needs, directly or through others."""
    seen: set[str] = set()
    todo = list(dependencies(shot_id))
    while todo:
        need = todo.pop()
        if need not in seen:
            seen.add(need)
            todo += dependencies(need)
    return seen


def _media() -> ModuleType:
    """The media module (PyAV), loaded when a story first needs a still or its film."""
    try:
        from . import media
    except ImportError as exc:
        raise KlingError(f"stills and films need the stories extra: {install_hint('stories')} ({exc})") from None
    return media
