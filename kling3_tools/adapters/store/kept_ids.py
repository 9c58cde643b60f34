"""Task ids the API returned that could not be written with their task: kept on their attempt (still
`submitting`, now with a `task_id`), so that the next sweep of any poller records the task and follows it
(`Upkeep.adopt`). The same on both backends."""

from __future__ import annotations

from ...domain.ledger import Attempt
from .rows import Statements, attempt_from_row


class KeptTaskIds(Statements):
    async def keep_task_id(self, attempt_id: str, task_id: str) -> bool:
        p = self._dialect.param
        sql = (
            f"UPDATE attempts SET task_id = {p('task_id')} "
            f"WHERE attempt_id = {p('attempt_id')} AND state = 'submitting' AND task_id IS NULL"
        )
        return bool(await self._write(sql, {"task_id": task_id, "attempt_id": attempt_id}))

    async def kept_task_ids(self, *, api_url: str, limit: int) -> list[Attempt]:
        p = self._dialect.param
        # `state = 'submitting'` lies inside the partial index of open attempts (`attempts_held`): few rows.
        sql = (
            "SELECT * FROM attempts WHERE state = 'submitting' AND task_id IS NOT NULL "
            f"AND api_url = {p('api_url')} ORDER BY created_at LIMIT {p('limit')}"
        )
        return [attempt_from_row(row) for row in await self._fetch(sql, {"api_url": api_url, "limit": limit})]
