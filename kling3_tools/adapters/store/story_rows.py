"""Stories in the store, the same on both backends: one row per story (the record as JSON, beside the
columns a claim and a listing read), claimed under a lease like tasks, so two pollers never advance one
story at once; and the one ledger step a story adds, a reserved shot's start."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pydantic import ValidationError

from ...domain.ledger import AttemptState
from ...domain.story_record import StoryRecord, StoryState
from .rows import Statements

log = logging.getLogger("kling3_tools.store")

STORY_COLUMNS = [
    "story_id",
    "api_url",
    "origin_kind",
    "user_id",
    "owner",
    "state",
    "created_at",
    "due_at",
    "body",
]


def story_to_row(record: StoryRecord) -> dict[str, Any]:
    return {
        "story_id": record.story_id,
        "api_url": record.api_url,
        "origin_kind": record.origin.kind,
        "user_id": record.user_id,
        "owner": record.owner,
        "state": record.state.value,
        "created_at": record.created_at,
        "due_at": record.due_at,
        "body": record.model_dump_json(exclude={"due_at"}),
    }


def story_from_row(row: dict[str, Any]) -> StoryRecord | None:
    """The record, or None (logged) for a row this version cannot read: one bad row must not stop the rest."""
    try:
        record = StoryRecord.model_validate_json(row["body"])
    except ValidationError as exc:
        log.error("story %s cannot be read (%s); it is set aside", row.get("story_id"), exc.errors()[0]["msg"])
        return None
    record.due_at = row["due_at"]
    return record


class StoryTable(Statements):
    """Stories' queries, mixed into each backend."""

    def _in(self, name: str, values: list[str], params: dict[str, Any]) -> str:
        """`(:name0, :name1, …)` with the values added to `params`."""
        names = [f"{name}{number}" for number in range(len(values))]
        params.update(zip(names, values, strict=True))
        return f"({', '.join(self._dialect.param(n) for n in names)})" if names else "(NULL)"

    async def get_story(self, story_id: str) -> StoryRecord | None:
        sql = f"SELECT * FROM stories WHERE story_id = {self._dialect.param('story_id')}"
        rows = await self._fetch(sql, {"story_id": story_id})
        return story_from_row(rows[0]) if rows else None

    async def _readable(self, rows: list[dict[str, Any]]) -> list[StoryRecord]:
        """The records of `rows`; an unreadable one is set aside (failed, no longer due, its lease released)."""
        records = []
        for row in rows:
            record = story_from_row(row)
            if record is not None:
                records.append(record)
            elif row.get("state") == StoryState.RUNNING.value:
                p = self._dialect.param
                sql = (
                    f"UPDATE stories SET state = 'failed', due_at = NULL, lease_owner = NULL, lease_until = NULL "
                    f"WHERE story_id = {p('story_id')}"
                )
                await self._write(sql, {"story_id": row["story_id"]})
        return records

    async def save_story(self, record: StoryRecord, *, owner: str) -> bool:
        """Write the story while `owner` holds its lease, which is then released; False when it was lost."""
        p = self._dialect.param
        sql = (
            f"UPDATE stories SET state = {p('state')}, due_at = {p('due_at')}, body = {p('body')}, "
            f"lease_owner = NULL, lease_until = NULL WHERE story_id = {p('story_id')} AND lease_owner = {p('owner')}"
        )
        return bool(await self._write(sql, {**story_to_row(record), "owner": owner}))

    async def claim_stories(
        self, *, owner: str, now: float, lease_seconds: float, limit: int, api_url: str, kinds: list[str]
    ) -> list[StoryRecord]:
        """Lease up to `limit` stories due by `now` whose origin kind this process delivers."""
        p = self._dialect.param
        params: dict[str, Any] = {"owner": owner, "now": now, "until": now + lease_seconds, "limit": limit}
        free = f"(lease_until IS NULL OR lease_until < {p('now')})"
        due = (
            f"SELECT story_id FROM stories WHERE api_url = {p('api_url')} AND due_at <= {p('now')} "
            f"AND origin_kind IN {self._in('kind', kinds, params)} AND {free} ORDER BY due_at LIMIT {p('limit')}"
        )
        sql = (
            f"UPDATE stories SET lease_owner = {p('owner')}, lease_until = {p('until')} "
            f"WHERE story_id IN ({due}) AND {free} RETURNING *"
        )
        rows = await self._fetch(sql, {**params, "api_url": api_url}, write=True)
        return await self._readable(rows)

    async def lease_story(self, story_id: str, *, owner: str, now: float, lease_seconds: float) -> StoryRecord | None:
        """Lease this one story (to change it from a front end); None while someone else holds it."""
        p = self._dialect.param
        sql = (
            f"UPDATE stories SET lease_owner = {p('owner')}, lease_until = {p('until')} "
            f"WHERE story_id = {p('story_id')} AND (lease_until IS NULL OR lease_until < {p('now')}) RETURNING *"
        )
        params = {"owner": owner, "until": now + lease_seconds, "story_id": story_id, "now": now}
        rows = await self._fetch(sql, params, write=True)
        readable = await self._readable(rows)
        return readable[0] if readable else None

    async def renew_story(self, story_id: str, *, owner: str, until: float) -> bool:
        p = self._dialect.param
        sql = (
            f"UPDATE stories SET lease_until = {p('until')} "
            f"WHERE story_id = {p('story_id')} AND lease_owner = {p('owner')}"
        )
        return bool(await self._write(sql, {"until": until, "story_id": story_id, "owner": owner}))

    async def wake_story(self, story_id: str, now: float) -> None:
        """Bring a story's next look forward to `now` (one of its shots ended)."""
        p = self._dialect.param
        sql = f"UPDATE stories SET due_at = {p('now')} WHERE story_id = {p('story_id')} AND due_at IS NOT NULL"
        await self._write(sql, {"now": now, "story_id": story_id})

    async def next_story_due(self, *, api_url: str, kinds: list[str]) -> float | None:
        p = self._dialect.param
        params: dict[str, Any] = {"api_url": api_url}
        sql = (
            "SELECT MIN(CASE WHEN lease_until IS NULL OR lease_until < due_at THEN due_at ELSE lease_until END) "
            f"AS due FROM stories WHERE due_at IS NOT NULL AND api_url = {p('api_url')} "
            f"AND origin_kind IN {self._in('kind', kinds, params)}"
        )
        due = (await self._fetch(sql, params))[0]["due"]
        return None if due is None else float(due)

    async def recent_stories(
        self,
        *,
        state: StoryState | None = None,
        origin_kind: str | None = None,
        user_id: int | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> list[StoryRecord]:
        """Most recent first."""
        p = self._dialect.param
        filters = {"state": state and state.value, "origin_kind": origin_kind, "user_id": user_id, "owner": owner}
        params: dict[str, Any] = {key: value for key, value in filters.items() if value is not None}
        where = " AND ".join(["1 = 1", *(f"{key} = {p(key)}" for key in params)])
        sql = f"SELECT * FROM stories WHERE {where} ORDER BY created_at DESC LIMIT {p('limit')}"
        return await self._readable(await self._fetch(sql, {**params, "limit": limit}))

    async def start_reserved(self, attempt_id: str, request: dict[str, Any], *, expires_at: float) -> bool:
        """`reserved` → `submitting` with the shot's real request and its deadline, dated now (it counts from
        when it is sent): one conditional update, so a shot is sent at most once whoever tries. False when it
        is no longer reserved."""
        p = self._dialect.param
        sql = (
            f"UPDATE attempts SET state = '{AttemptState.SUBMITTING.value}', "
            f"request = {self._dialect.json('request')}, expires_at = {p('expires_at')}, created_at = {p('now')} "
            f"WHERE attempt_id = {p('attempt_id')} AND state = '{AttemptState.RESERVED.value}'"
        )
        params = {"request": json.dumps(request), "expires_at": expires_at, "attempt_id": attempt_id}
        return bool(await self._write(sql, {**params, "now": time.time()}))

    async def release_reserved(self, attempt_id: str, note: str) -> bool:
        """`reserved` → `released` (never one already being sent); False when it is no longer reserved."""
        p = self._dialect.param
        sql = (
            f"UPDATE attempts SET state = '{AttemptState.RELEASED.value}', note = {p('note')} "
            f"WHERE attempt_id = {p('attempt_id')} AND state = '{AttemptState.RESERVED.value}'"
        )
        return bool(await self._write(sql, {"note": note, "attempt_id": attempt_id}))
