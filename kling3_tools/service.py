"""The core's front door for front ends: submit, track and wait, with every task recorded.

`KlingService.open(settings)` builds what a process needs once: one pooled
HTTP client, the API client, the store, the notifier registry and the
scheduler (and, with `sandbox=True`, an embedded sandbox to talk to).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from .adapters.assets import inputs
from .adapters.assets.archive import Archiver
from .adapters.assets.inputs import CheckedRequest, LocalFiles
from .adapters.assets.store import AssetStore
from .adapters.client import AsyncKlingClient, UpdateCallback, WaitPolicy
from .adapters.store import StatusFilter, TaskStore
from .config import Settings
from .domain.errors import KlingError
from .domain.ledger import DAY_SECONDS, SpendLimit, Usage
from .domain.models import GenerateRequest
from .domain.records import LOCAL_OWNER, AnyOrigin, Checked, Delivery, TaskRecord, owner_of
from .domain.story import Story
from .domain.story_record import StoryRecord
from .domain.tasks import Task
from .making import Making
from .parts import Endpoint, open_parts
from .workflows.characters import Characters
from .workflows.notifiers import CliNotifier, Notifier, Notifiers, WebhookNotifier
from .workflows.observe import Observer
from .workflows.poller import Poller
from .workflows.schedule import SchedulePolicy, Scheduler
from .workflows.sources import Sources
from .workflows.spending import Spending
from .workflows.stories.control import Stories
from .workflows.stories.runner import StoryParts
from .workflows.videos import Videos

log = logging.getLogger("kling3_tools")


class KlingService(Making):
    def __init__(
        self,
        client: AsyncKlingClient,
        store: TaskStore,
        settings: Settings,
        *,
        http: httpx.AsyncClient,
        schedule: SchedulePolicy | None = None,
        endpoint: Endpoint | None = None,
        assets: AssetStore | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.observer = observer or Observer()  # what an operator's metrics count (`kling3_tools.ops`)
        self.client = client
        self.assets = assets  # where local inputs go; None: only URLs are accepted
        self.endpoint = endpoint or Endpoint(client.base_url)
        self.api_url = self.endpoint.api_url  # the API's name in the store
        self.store = store = self.observer.watched(store)
        self.settings = settings
        self.http = http
        policy = schedule or SchedulePolicy.from_settings(settings.poller)
        self.scheduler = Scheduler(store, replace(policy, called_back=True) if client.provider.callback_url else policy)
        self.notifiers = Notifiers(CliNotifier())
        if settings.poller.webhook_secret is not None:
            self.notifiers.register(WebhookNotifier(http, settings.poller.webhook_secret.get_secret_value()))
        self.pollers: list[Poller] = []
        self.spending = Spending(
            client, store, self.scheduler, self.observer, settings.budget, api_url=self.api_url, wake=self.wake_pollers
        )
        self.budget = self.spending.budget
        self.prices, self.unit = self.spending.prices, client.provider.unit  # the provider's, in its own unit
        self._needs_follower = False
        self.max_download_bytes = int(settings.poller.max_download_mb * 1024 * 1024)
        self.archiver = (
            Archiver(assets, http, client.url_policy, self.max_download_bytes)
            if assets is not None and settings.storage.archive_videos
            else None
        )
        self.videos = Videos(
            client, store, http, assets, keep_in=self.endpoint.keeps_videos, max_bytes=self.max_download_bytes
        )
        self.sources = Sources(store, self.videos, self.get, provider=client.provider.name)  # see `examine`
        self.characters = Characters(client, store, assets)
        self.stories = Stories(  # start, follow and retry stories; the pollers advance them
            StoryParts(
                self.spending,
                self.notifiers,
                self.scheduler,
                self.observer,
                settings.poller,
                assets,
                fetch=self.videos.to_file,
                get=self.get,
                reachable=self.endpoint.videos,
                wake_pollers=self.wake_pollers,
                check_ready_to_spend=self.check_ready_to_spend,
            )
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        sandbox: bool = False,
        schedule: SchedulePolicy | None = None,
        observer: Observer | None = None,
        wait_for_store: bool = False,
    ) -> AsyncIterator[KlingService]:
        """The service for the configured API, or for an embedded sandbox started with it (`sandbox=True`);
        `wait_for_store`: a store server that does not answer yet is waited for (long-lived processes)."""
        async with contextlib.AsyncExitStack() as stack:
            parts = await open_parts(stack, settings, sandbox=sandbox, wait_for_store=wait_for_store)
            yield cls(
                parts.client,
                parts.store,
                settings,
                http=parts.http,
                schedule=schedule or parts.schedule,
                endpoint=parts.endpoint,
                assets=parts.assets,
                observer=observer,
            )

    # --- spending: the one path every generate takes -----------------------------------

    @staticmethod
    def check(fields: Mapping[str, Any], files: LocalFiles = inputs.ANY_PATH) -> CheckedRequest:
        """A request from a front end's fields (`GenerateRequest.fields_of`), its local files (paths, data:
        URIs) checked with everything else, without I/O: priced, not yet uploaded. Raises
        `RequestValidationError` with every problem at once."""
        return inputs.examine(fields, files)

    async def prepare(
        self, request: CheckedRequest | Mapping[str, Any], files: LocalFiles = inputs.ANY_PATH
    ) -> GenerateRequest:
        """The request to `submit`: a checked one's local files uploaded (fields are checked first, `files`
        saying which local paths they may name); nothing is uploaded while any problem remains."""
        checked = request if isinstance(request, CheckedRequest) else self.check(request, files)
        return await inputs.prepare(checked, self.assets, inline_images=self.client.provider.inline_images)

    async def submit(
        self,
        request: GenerateRequest,
        origin: AnyOrigin | None = None,
        *,
        limits: Sequence[SpendLimit] = (),
        on_created: Callable[[Task], None] | None = None,
    ) -> TaskRecord:
        """Spend credits through the ledger: reserve → POST → record → schedule. `limits` are the front end's
        own, checked with `[budget]` in the reservation; `on_created` sees the task the moment the API returns
        it, before anything is written (a CLI prints its id there). Raises `SpendingRefusedError` or `StoreError`
        with nothing sent, and `OutcomeUnknownError` (with its `attempt_id`) when the POST may have created one."""
        self.check_ready_to_spend()
        return await self.spending.submit(request, origin, limits=limits, on_created=on_created)

    def require_key(self) -> None:
        """Raise `NoAPIKeyError` when no API key was given (what spends nothing works without one)."""
        self.client.require_key()

    def check_ready_to_spend(self) -> None:
        """What stops a generate before anything is reserved or sent: no API key (`NoAPIKeyError`), or this
        process delivers its own results and no poller follows them now (`KlingError`)."""
        self.require_key()
        if self._needs_follower and not any(poller.is_following for poller in self.pollers):
            reasons = "; ".join(p.last_error for p in self.pollers if p.last_error) or "it is starting"
            raise KlingError(
                f"Not started, nothing was spent: no poller is following tasks right now ({reasons}), so the "
                "result could not be delivered. Try again in a moment."
            )

    def wake_pollers(self) -> None:
        for poller in self.pollers:
            poller.wake()

    async def start_story(self, story: Story, origin: AnyOrigin | None = None, **options: Any) -> StoryRecord:
        """Reserve a whole story and record it, its characters found for its owner; the pollers run it."""
        story = await self.sources.story(story, LOCAL_OWNER if origin is None else owner_of(origin))
        return await self.stories.start(story, origin, **options)

    async def check_spend(self, credits: int, limits: Sequence[SpendLimit] = (), *, dearest: int | None = None) -> None:
        """Refuse early (before asking a person to confirm) by the limits `submit` will enforce. Advisory:
        only `submit`'s reservation decides, so this may pass and `submit` still refuse. For several videos
        (a story), `credits` is their total and `dearest` the one the per-video limits judge."""
        await self.spending.check_spend(credits, limits, dearest=dearest)

    async def usage(self, limit: SpendLimit) -> Usage:
        return await self.store.usage(limit)

    async def spent_by_user(self, origin_kind: str) -> dict[int, int]:
        """Credits per user over the last 24 hours (tasks not failed, plus open attempts)."""
        return await self.store.credits_by_user(time.time() - DAY_SECONDS, origin_kind=origin_kind)

    async def resolve(self, attempt_id: str, *, task_id: str | None) -> TaskRecord | None:
        """Settle an open attempt by hand (see `Spending.resolve`); a story's shot reopens its story, which may
        then go on, or end again with what the shot became."""
        attempt, record = await self.spending.resolve(attempt_id, task_id=task_id)
        if attempt.origin.story_id:
            await self.stories.reopen(attempt.origin.story_id)
        return record

    async def settle_unknown(self) -> None:
        """Settle from the API the generates whose outcome is unknown (see `Spending.settle_unknown`)."""
        for attempt in await self.spending.settle_unknown():
            if attempt.origin.story_id:
                await self.stories.reopen(attempt.origin.story_id)

    # --- following tasks ----------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        record = await self.store.get(task_id)
        return None if record is None else self.endpoint.reachable(record)

    async def recent(
        self,
        *,
        status: StatusFilter | None = None,
        origin_kind: str | None = None,
        user_id: int | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> list[TaskRecord]:
        records = await self.store.recent(
            status=status, origin_kind=origin_kind, user_id=user_id, owner=owner, limit=limit
        )
        return [self.endpoint.reachable(record) for record in records]

    async def expected_finish(self, record: TaskRecord) -> float:
        return await self.scheduler.expected_finish(record)

    async def follow(self, task_id: str, *, asked_at: float) -> tuple[TaskRecord | None, float]:
        """A tracked task as fresh as a person waiting on it needs: the store's record (the pollers keep it
        current), or the API's answer when no poller will look within the dense interval, asked at most once
        an interval. `asked_at` is when it was last asked (`time.monotonic()`); returns it, updated."""
        record = await self.get(task_id)
        dense = self.scheduler.policy.dense_interval
        if record is None or not record.is_tracking or time.monotonic() - asked_at <= dense:
            return record, asked_at
        if (record.due_at or 0) - time.time() > dense:  # the pollers will not look for a while: ask now
            with contextlib.suppress(KlingError):
                record = (await self.status(task_id)).record or record
            asked_at = time.monotonic()
        return record, asked_at

    async def status(self, task_id: str) -> Checked:
        """Ask the API now, and record what it said when the task is tracked here."""
        found = await self.store.get(task_id)  # its type decides the path on some providers
        task = await self.client.status(task_id, None if found is None else found.type)
        record = await self._record_progress(task, found)
        return Checked(task, None if record is None else self.endpoint.reachable(record))

    async def wait(
        self, task_id: str, *, timeout: float, on_update: UpdateCallback | None = None, policy: WaitPolicy | None = None
    ) -> Task:
        """Wait in this process (for a person at a terminal or a tool call), recording progress."""

        async def record_and_report(task: Task) -> None:
            await self._record_progress(task)
            if on_update is not None:
                result = on_update(task)
                if inspect.isawaitable(result):
                    await result

        found = await self.store.get(task_id)  # its type decides the path on some providers
        type_ = None if found is None else found.type
        return await self.client.wait(task_id, type_, timeout=timeout, on_update=record_and_report, policy=policy)

    async def download(self, task: Task, path: str | Path) -> Path:
        """The task's video saved to `path` (a file, or a folder for `<task id>.mp4`), noted on its record."""
        return await self.videos.download(task, path)

    async def keep(self, task: Task) -> Path | None:
        """A copy kept where the API's URLs die with this process (the embedded sandbox); None elsewhere."""
        return await self.videos.keep(task)

    async def _record_progress(self, task: Task, record: TaskRecord | None = None) -> TaskRecord | None:
        """Apply what the API said to the task's record (`record` when it was just read, else read now)."""
        record = record or await self.store.get(task.task_id)
        if record is None or not record.is_tracking:
            return record
        now = time.time()
        record.apply(task, now)
        if record.is_tracking:
            record.due_at = await self.scheduler.next_check(record, now)
        elif record.origin.kind == "cli":
            record.delivery = Delivery.DELIVERED
            record.due_at = None
        await self.store.save_progress(record)
        return record

    @property
    def base_url(self) -> str:
        return self.client.base_url

    def delivered_kinds(self) -> list[str]:
        """The kinds of task whose results this process can deliver (`cli`, `webhook`, …)."""
        return self.notifiers.kinds()

    def register(self, notifier: Notifier) -> None:
        """Deliver the results of this notifier's kind of task (pollers started later use it)."""
        self.notifiers.register(notifier)

    @contextlib.asynccontextmanager
    async def polling(self) -> AsyncIterator[Poller]:
        """An in-process poller for a front end that delivers its own results (MCP, Discord), once begun:
        restarted whenever it crashes, stopped gracefully on exit. While it is not following, `submit` refuses."""
        poller = self.poller()
        self._needs_follower = True
        supervisor = asyncio.create_task(poller.run_supervised())
        try:
            await poller.started.wait()  # one store read away: a store that does not answer is a poller failing
            yield poller
        finally:
            poller.stop()
            await supervisor

    def poller(self, *, concurrency: int | None = None, owner: str | None = None) -> Poller:
        """A poller over this service's client, store and notifiers (run it with `await poller.run()`)."""
        poller = Poller(
            self.client,
            self.store,
            self.notifiers,
            self.scheduler,
            self.settings.poller,
            concurrency=concurrency or self.settings.poller.concurrency,
            owner=owner,
            api_url=self.api_url,
            archiver=self.archiver,
            keep_days=self.settings.store.keep_days,
            stories=self.stories.runner,
            observer=self.observer,
            settle_unknown=self.settle_unknown,
        )
        self.pollers.append(poller)
        return poller
