"""Settling by hand what the ledger cannot know: a generate whose outcome is unknown (`kling3 tasks resolve`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .errors import KlingError
from .ledger import OPEN_STATES, AttemptState
from .records import TaskRecord

if TYPE_CHECKING:
    from .service import KlingService


async def resolve(service: KlingService, attempt_id: str, *, task_id: str | None) -> TaskRecord | None:
    """Settle an open attempt by hand: attach the task the dashboard shows (checked with the API), or, with no
    `task_id`, release it because nothing was created. The task's record, or None."""
    attempt = await service.store.get_attempt(attempt_id)
    if attempt is None:
        raise KlingError(f"No attempt {attempt_id} in the ledger (`kling3 tasks` lists the open ones).")
    if attempt.state not in OPEN_STATES:
        raise KlingError(
            f"{attempt_id} is already {attempt.state.value}" + (f" as {attempt.task_id}." if attempt.task_id else ".")
        )
    if task_id is None:
        await service.store.close_attempt(attempt_id, AttemptState.RELEASED, "released by hand: nothing was created")
        if attempt.origin.story_id:  # its story may be retried now
            await service.stories.reopen(attempt.origin.story_id)
        return None
    if attempt.state is AttemptState.RESERVED:
        raise KlingError(f"{attempt_id} is a story's shot that was never sent: release it, or let the story run.")
    if attempt.api_url != service.api_url:
        raise KlingError(f"{attempt_id} was sent to {attempt.api_url}; resolve it with that API (--base-url).")
    task = await service.client.status(task_id)
    record = attempt.recorded_as(task)
    record.apply(task, time.time())
    if record.is_tracking:
        record.due_at = await service.first_check(record)
    await service.store.settle(attempt_id, record)
    if attempt.origin.story_id:  # its story follows the task now, and is delivered again when it ends
        await service.stories.reopen(attempt.origin.story_id)
    return record
