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
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import platformdirs

from ...adapters.assets.store import AssetStore
from ...config import PollerSettings
from ...domain.errors import KlingError, install_hint
from ...domain.ledger import AttemptState
from ...domain.models import GenerateRequest
from ...domain.records import Delivery, Outcome, TaskRecord
from ...domain.story_plan import plan
from ...domain.story_record import ShotState, StoryRecord, StoryState
from ...domain.tasks import Task
from ...domain.url_fields import with_urls
from ..leases import kept_lease
from ..notifiers import DELIVERY_GIVE_UP_SECONDS, Notifiers, delivered, delivery_failed
from ..observe import Observer
from ..schedule import Scheduler
from ..spending import Spending

log = logging.getLogger("kling3_tools.stories")

Needs = Callable[[str], set[str]]  # the shots a shot takes an input from
CLAIM_LIMIT = 4  # stories advanced by one sweep


@dataclass(frozen=True, slots=True)
class StoryParts:
    """What stories run on, handed over by the service that keeps them (never the service itself)."""

    spending: Spending
    notifiers: Notifiers
    scheduler: Scheduler
    observer: Observer
    settings: PollerSettings
    assets: AssetStore | None
    fetch: Callable[[str, Path], Awaitable[object]]  # a video into a file, by the rules of `downloads`
    get: Callable[[str], Awaitable[TaskRecord | None]]  # a task's record, its videos reachable from here
    reachable: Callable[[list[str]], list[str]]  # the API's video URLs as reached from this process
    wake_pollers: Callable[[], None]
    check_ready_to_spend: Callable[[], None]  # raises without a key, or while no poller would advance a story


class StoryRunner:
    """The pollers' side of stories: each sweep advances the due ones (see the module's docstring)."""

    def __init__(self, parts: StoryParts) -> None:
        self.parts = parts
        self.store = parts.spending.store

    async def sweep(self, owner: str, kinds: list[str]) -> None:
        """Lease the due stories of these kinds and advance each (called from a poller's sweep); the store failing
        is logged, and the next sweep tries again."""
        lease = self.parts.settings.lease_seconds
        try:
            claimed = await self.store.claim_stories(
                owner=owner,
                now=time.time(),
                lease_seconds=lease,
                limit=CLAIM_LIMIT,
                api_url=self.parts.spending.api_url,
                kinds=kinds,
            )
            await asyncio.gather(*(self._work(owner, record) for record in claimed))
        except Exception as exc:
            log.warning("advancing stories failed (%s: %s); trying again at the next sweep", type(exc).__name__, exc)

    async def _work(self, owner: str, record: StoryRecord) -> None:
        lease = self.parts.settings.lease_seconds
        before = record.summary()

        async def renew(until: float) -> bool:
            return await self.store.renew_story(record.story_id, owner=owner, until=until)

        try:
            async with kept_lease(renew, lease, record.story_id):
                await self.advance(record)
            record.failing_since = None
        except Exception as exc:  # one story's trouble must not stop the others: it is looked at again later
            now, reason = time.time(), f"{type(exc).__name__}: {exc}"
            record.failing_since = record.failing_since or now
            log.warning("story %s: %s; trying again later", record.story_id, reason)
            record.due_at = now + self.parts.scheduler.policy.max_interval
            if now - record.failing_since > DELIVERY_GIVE_UP_SECONDS and record.state is StoryState.RUNNING:
                record.finish(StoryState.FAILED, f"stopped after a day of errors ({reason})")
        if not await self.store.save_story(record, owner=owner):
            self.parts.observer.lease_lost("story")
            log.warning("lease on %s was lost before it was saved", record.story_id)
            return
        if record.state is StoryState.RUNNING and record.summary() != before:
            try:
                await self.parts.notifiers[record.origin.kind].story_progress(record)
            except Exception as exc:
                log.info("progress of %s not shown: %s", record.story_id, exc)

    async def advance(self, record: StoryRecord) -> None:
        """One step of the story (see the module's docstring); writes nothing itself."""
        now = time.time()
        if record.state is StoryState.RUNNING:
            await self.refresh(record)
            story_plan = plan(record.story, self.parts.spending.prices)
            await self._release_blocked(record, story_plan.stages, story_plan.dependencies)
            ready = [
                shot_id
                for shot_id, shot in record.shots.items()
                if shot.state is ShotState.WAITING
                and all(record.shots[need].state is ShotState.SUCCEEDED for need in story_plan.dependencies(shot_id))
            ]
            sent = await asyncio.gather(*(self._submit(record, shot_id) for shot_id in ready), return_exceptions=True)
            failures = [result for result in sent if isinstance(result, BaseException)]
            if failures:  # every send has ended before the story is saved and its lease released
                raise failures[0]
            if all(shot.state.ended for shot in record.shots.values()):
                await self._end(record)
            else:
                record.due_at = now + self.parts.scheduler.policy.dense_interval
        if record.state is not StoryState.RUNNING and record.delivery is Delivery.PENDING:
            await self._deliver(record)

    async def refresh(self, record: StoryRecord) -> None:
        """Each unfinished shot's state, from its attempt in the ledger and its task in the store."""
        now = time.time()
        for shot in record.shots.values():
            if shot.state.ended and shot.state is not ShotState.UNKNOWN:  # an unknown one may be resolved
                continue
            attempt = await self.store.get_attempt(shot.attempt_id)
            if attempt is None:
                shot.state, shot.note = ShotState.RELEASED, "its ledger entry is gone"
                continue
            state = attempt.state_at(now)
            if state is AttemptState.SUBMITTED and attempt.task_id:
                shot.task_id = attempt.task_id
                task = await self.parts.get(attempt.task_id)
                if task is None or task.outcome is None:
                    shot.state = ShotState.RUNNING
                elif task.outcome is Outcome.SUCCEEDED and task.video_url:
                    shot.state, shot.video_url = ShotState.SUCCEEDED, task.video_url
                elif task.outcome is Outcome.SUCCEEDED:
                    shot.state, shot.note = ShotState.FAILED, "the API said it succeeded but gave no video URL"
                else:
                    shot.state = ShotState.FAILED
                    shot.note = task.error_message or f"the task {task.outcome.value.replace('_', ' ')}"
            elif state is AttemptState.UNKNOWN:
                shot.state = ShotState.UNKNOWN
                resolve = f"kling3 tasks resolve {attempt.attempt_id} " + (
                    f"--task-id {shot.task_id}" if shot.task_id else "--task-id ID (or --release)"
                )
                shot.note = f"{attempt.note or 'no answer'}; it may have been created and charged: {resolve}"
            elif state is AttemptState.RELEASED:
                shot.state, shot.note = ShotState.RELEASED, attempt.note
            else:
                shot.state = ShotState.SUBMITTING if state is AttemptState.SUBMITTING else ShotState.WAITING

    async def _release_blocked(self, record: StoryRecord, stages: list[list[str]], needs: Needs) -> None:
        """Release every reserved shot that needs a shot that cannot give it its input (in stage order, so
        what depends on a released shot is released in the same pass)."""
        for shot_id in (shot_id for stage in stages for shot_id in stage):
            shot = record.shots[shot_id]
            blocked = [need for need in sorted(needs(shot_id)) if record.shots[need].state.blocks]
            if shot.state is ShotState.WAITING and blocked:
                note = f"not sent: shot `{blocked[0]}` {record.shots[blocked[0]].state.value}"
                if await self.store.release_reserved(shot.attempt_id, note):
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
                    urls[(field, index)] = self._here(source.video_url)
            request = GenerateRequest.build(**with_urls(story.fields(story.shot(shot_id)), urls))
        except KlingError as exc:  # the input could not be made: the shot is not sent, its credits come back
            if await self.store.release_reserved(shot.attempt_id, f"not sent: {exc.message}"):
                shot.state, shot.note = ShotState.RELEASED, f"not sent: {exc.message}"
            return
        attempt = await self.store.get_attempt(shot.attempt_id)
        if attempt is None:
            return

        def created(task: Task) -> None:  # kept before anything is written: a failed record loses no id
            shot.task_id = task.task_id

        try:
            task = await self.parts.spending.submit_reserved(attempt, request, on_created=created)
        except KlingError as exc:  # released (the API refused it) or unknown: the ledger tells at the next look
            log.warning("%s: shot %s was not sent: %s", record.story_id, shot_id, exc.message)
            shot.state, shot.note = ShotState.SUBMITTING, exc.message
            return
        if task is not None:
            shot.state, shot.task_id = ShotState.RUNNING, task.task_id
            log.info("%s: shot %s sent as %s", record.story_id, shot_id, task.task_id)

    async def _still(self, record: StoryRecord, shot_id: str, which: Literal["last_frame", "first_frame"]) -> str:
        """The URL of a still from a shot's clip, made and hosted once (kept in the story)."""
        source = record.shots[shot_id]
        if which in source.stills:
            return source.stills[which]
        media = media_module()
        assets = self.parts.assets
        if assets is None or source.video_url is None:
            raise KlingError("no asset store to host the still in")
        work = self.films() / record.story_id
        clip = await self._fetch(self._here(source.video_url), work / f"{shot_id}.mp4")
        png = await asyncio.to_thread(media.still, clip, which)
        key = await assets.put(png, content_type="image/png", suffix=".png")
        source.stills[which] = await assets.url(key)
        return source.stills[which]

    async def _end(self, record: StoryRecord) -> None:
        work = self.films() / record.story_id
        if stopped := record.stopped_by:
            shot_id, shot = stopped
            record.finish(StoryState.FAILED, f"shot `{shot_id}` {shot.state.value}: {shot.note}")
        else:
            target = Path(str(record.film_path))
            try:
                await self._film(record, work, target)
            except (KlingError, OSError) as exc:  # a clip too large, gone or refused; no PyAV; a full disk
                reason = exc.message if isinstance(exc, KlingError) else f"{target}: {exc.strerror or exc}"
                record.finish(StoryState.FAILED, f"the film could not be made ({reason}); each shot's clip is above")
            else:
                record.finish(StoryState.SUCCEEDED)
                log.info("%s: film %s", record.story_id, target)
        shutil.rmtree(work, ignore_errors=True)

    async def _film(self, record: StoryRecord, work: Path, target: Path) -> None:
        media = media_module()
        clips = [
            await self._fetch(self._here(str(record.shots[i].video_url)), work / f"{number:02d}-{i}.mp4")
            for number, i in enumerate(record.story.film)
        ]
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(media.stitch, clips, target, record.story.cut.transition)
        if self.parts.assets is not None:
            record.film_key = await self.parts.assets.put(target, content_type="video/mp4", suffix=".mp4")
            record.film_url = await self.parts.assets.url(record.film_key)

    def _here(self, video_url: str) -> str:
        """A shot's video as reached from this process (a story may have begun in another one)."""
        return self.parts.reachable([video_url])[0]

    async def _fetch(self, url: str, target: Path) -> Path:
        if not target.exists():
            await self.parts.fetch(url, target)
        return target

    async def _deliver(self, record: StoryRecord) -> None:
        now = time.time()
        try:
            await self.parts.notifiers[record.origin.kind].deliver_story(record)
        except Exception as exc:
            result = delivery_failed(record, exc, now)
            log.info("delivery of %s failed (%s)", record.story_id, record.delivery_error)
            self.parts.observer.delivery(f"{record.origin.kind}_story", result)
            return
        delivered(record)
        self.parts.observer.delivery(f"{record.origin.kind}_story", "delivered", now - (record.finished_at or now))

    def films(self) -> Path:
        media_dir = self.parts.settings.media_dir
        return Path(media_dir).expanduser() if media_dir else Path(platformdirs.user_data_dir("kling3")) / "films"


def needs_of(dependencies: Needs, shot_id: str) -> set[str]:
    """Every shot `shot_id` needs, directly or through others."""
    seen: set[str] = set()
    todo = list(dependencies(shot_id))
    while todo:
        need = todo.pop()
        if need not in seen:
            seen.add(need)
            todo += dependencies(need)
    return seen


def media_module() -> ModuleType:
    """The media module (PyAV), loaded when a story first needs a still or its film."""
    try:
        from . import media
    except ImportError as exc:
        raise KlingError(f"stills and films need the stories extra: {install_hint('stories')} ({exc})") from None
    return media
