"""The core's front door for front ends: submit, track and wait, with every task recorded.

`KlingService.open(settings)` builds what a process needs once: one pooled
HTTP client, the API client, the store, the notifier registry and the
scheduler (and, with `sandbox=True`, an embedded sandbox to talk to).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator

import httpx

from .client import DEFAULT_LIMITS, AsyncKlingClient, RetryPolicy, UpdateCallback, WaitPolicy
from .config import Settings
from .errors import KlingError
from .models import GenerateRequest, Task
from .notifiers import CliNotifier, Notifiers, WebhookNotifier
from .poller import Poller
from .records import AnyOrigin, CliOrigin, Delivery, TaskRecord
from .schedule import SchedulePolicy, Scheduler
from .store import DEFAULT_STORE, SANDBOX_STORE, TaskStore, open_store


def sandbox_schedule(finish_seconds: float) -> SchedulePolicy:
    """A schedule sized for sandbox tasks, which finish in seconds rather than minutes."""
    return SchedulePolicy(
        prior_window=(finish_seconds * 0.5, finish_seconds * 1.5),
        dense_interval=max(0.5, finish_seconds / 10),
        max_interval=max(2.0, finish_seconds),
    )


class KlingService:
    def __init__(
        self,
        client: AsyncKlingClient,
        store: TaskStore,
        settings: Settings,
        *,
        http: httpx.AsyncClient,
        schedule: SchedulePolicy | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.http = http
        self.scheduler = Scheduler(store, schedule or SchedulePolicy.from_settings(settings.poller))
        self.notifiers = Notifiers(CliNotifier())
        if settings.poller.webhook_secret is not None:
            self.notifiers.register(WebhookNotifier(http, settings.poller.webhook_secret.get_secret_value()))
        self._pollers: list[Poller] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, *, sandbox: bool = False, schedule: SchedulePolicy | None = None
    ) -> AsyncIterator[KlingService]:
        retry = RetryPolicy(max_retries=settings.max_retries)
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(
                httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout_seconds, connect=10), limits=DEFAULT_LIMITS)
            )
            if sandbox:
                from .sandbox.server import SandboxServer

                server = stack.enter_context(SandboxServer(settings.sandbox))
                client = AsyncKlingClient(server.api_key, base_url=server.url, retry=retry, http_client=http)
                schedule = schedule or sandbox_schedule(settings.sandbox.finish_seconds)
            else:
                client = AsyncKlingClient(settings.api_key, base_url=settings.base_url, retry=retry, http_client=http)
            store = await open_store(
                settings.store.url,
                default_name=SANDBOX_STORE if sandbox else DEFAULT_STORE,
                pool_size=settings.store.pool_size,
            )
            stack.push_async_callback(store.close)
            yield cls(client, store, settings, http=http, schedule=schedule)

    async def submit(self, request: GenerateRequest, origin: AnyOrigin | None = None) -> TaskRecord:
        """Spend credits: generate, then record the task before anything else happens."""
        task = await self.client.generate(request)
        record = TaskRecord.submitted(task, request, api_url=self.client.base_url, origin=origin or CliOrigin())
        record.due_at = await self.scheduler.next_check(record, record.submitted_at)
        try:
            await self.store.add(record)
        except Exception as exc:
            raise KlingError(
                f"Task {task.task_id} was created ({task.consumed_credits} credits) but could not be recorded: {exc}. "
                f"Follow it with: kling3 wait {task.task_id}"
            ) from exc
        for poller in self._pollers:
            poller.wake()
        return record

    async def status(self, task_id: str) -> Task:
        """Ask the API now, and record what it said when the task is tracked here."""
        task = await self.client.status(task_id)
        await self._record_progress(task)
        return task

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

        return await self.client.wait(task_id, timeout=timeout, on_update=record_and_report, policy=policy)

    async def _record_progress(self, task: Task) -> None:
        record = await self.store.get(task.task_id)
        if record is None or not record.is_tracking:
            return
        now = time.time()
        record.apply(task, now)
        if record.is_tracking:
            record.due_at = await self.scheduler.next_check(record, now)
        elif record.origin.kind == "cli":
            record.delivery = Delivery.DELIVERED
            record.due_at = None
        await self.store.save_progress(record)

    def poller(self, *, concurrency: int = 8, owner: str | None = None) -> Poller:
        """A poller over this service's client, store and notifiers (run it with `await poller.run()`)."""
        poller = Poller(
            self.client,
            self.store,
            self.notifiers,
            self.scheduler,
            self.settings.poller,
            concurrency=concurrency,
            owner=owner,
        )
        self._pollers.append(poller)
        return poller
