"""MCP task handles, the same SQL on both backends: one row per handle an MCP client was given, beside the video
task (or story) it follows, bound to the identity that may see it. A handle for a call refused before anything
was made keeps that answer (`result`) instead."""

from __future__ import annotations

import json
from typing import Any

from ...domain.mcp_tasks import McpTaskHandle
from .rows import Statements

SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS mcp_tasks (
    mcp_task_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    tool TEXT NOT NULL,
    task_id TEXT,
    story_id TEXT,
    result TEXT,
    created_at REAL NOT NULL,
    cancelled_at REAL
);
CREATE INDEX IF NOT EXISTS mcp_tasks_owned ON mcp_tasks (owner, created_at);
"""
POSTGRES_TABLES = [
    """
    CREATE TABLE mcp_tasks (
        mcp_task_id text PRIMARY KEY,
        owner text NOT NULL,
        tool text NOT NULL,
        task_id text,
        story_id text,
        result jsonb,
        created_at double precision NOT NULL,
        cancelled_at double precision
    )""",
    "CREATE INDEX mcp_tasks_owned ON mcp_tasks (owner, created_at)",
]
KEPT_ANSWERS = 100  # an owner's handles on calls answered at once (refused before anything was made)
COLUMNS = ("mcp_task_id", "owner", "tool", "task_id", "story_id", "result", "created_at", "cancelled_at")


def _from_row(row: dict[str, Any]) -> McpTaskHandle:
    result = row["result"]
    return McpTaskHandle.model_validate(row | {"result": json.loads(result) if isinstance(result, str) else result})


class McpTaskTable(Statements):
    async def add_mcp_task(self, handle: McpTaskHandle) -> None:
        p, as_json = self._dialect.param, self._dialect.json
        row = handle.model_dump() | {"result": None if handle.result is None else json.dumps(handle.result)}
        values = ", ".join(as_json(c) if c == "result" else p(c) for c in COLUMNS)
        await self._write(f"INSERT INTO mcp_tasks ({', '.join(COLUMNS)}) VALUES ({values})", row)
        if handle.result is not None:  # an answer known at once costs its caller nothing: keep the newest only
            answers = f"owner = {p('owner')} AND result IS NOT NULL"
            newest = f"SELECT mcp_task_id FROM mcp_tasks WHERE {answers} ORDER BY created_at DESC LIMIT {p('keep')}"
            sql = f"DELETE FROM mcp_tasks WHERE {answers} AND mcp_task_id NOT IN ({newest})"
            await self._write(sql, {"owner": handle.owner, "keep": KEPT_ANSWERS})

    async def get_mcp_task(self, mcp_task_id: str, *, owner: str) -> McpTaskHandle | None:
        """The handle when `owner` holds it; None for another owner's as for an unknown id."""
        p = self._dialect.param
        sql = f"SELECT * FROM mcp_tasks WHERE mcp_task_id = {p('id')} AND owner = {p('owner')}"
        rows = await self._fetch(sql, {"id": mcp_task_id, "owner": owner})
        return _from_row(rows[0]) if rows else None

    async def mcp_tasks(
        self, owner: str, *, before: tuple[float, str] | None = None, limit: int
    ) -> list[McpTaskHandle]:
        """`owner`'s handles, newest first; with `before` (a handle's creation time and id), those after it."""
        p = self._dialect.param
        params: dict[str, Any] = {"owner": owner, "limit": limit}
        where = f"owner = {p('owner')}"
        if before is not None:
            params |= {"at": before[0], "id": before[1]}
            where += f" AND (created_at < {p('at')} OR (created_at = {p('at')} AND mcp_task_id < {p('id')}))"
        sql = f"SELECT * FROM mcp_tasks WHERE {where} ORDER BY created_at DESC, mcp_task_id DESC LIMIT {p('limit')}"
        return [_from_row(row) for row in await self._fetch(sql, params)]

    async def cancel_mcp_task(self, mcp_task_id: str, at: float) -> bool:
        """Mark the handle cancelled (once: False when it already was)."""
        p = self._dialect.param
        sql = f"UPDATE mcp_tasks SET cancelled_at = {p('at')} WHERE mcp_task_id = {p('id')} AND cancelled_at IS NULL"
        return bool(await self._write(sql, {"id": mcp_task_id, "at": at}))
