"""People's own limits over MCP, set by an operator (`kling3 person`), the same SQL on both backends: one row per
subject the authorization server names a person with. They stand over `[mcp] people` and the `*_per_user` ones."""

from __future__ import annotations

import time
from typing import Any

from .rows import Statements

LIMITS = ("daily_credit_budget_per_user", "max_concurrent_tasks_per_user", "cooldown_seconds")
SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS person_limits (
    subject TEXT PRIMARY KEY,
    daily_credit_budget_per_user INTEGER,
    max_concurrent_tasks_per_user INTEGER,
    cooldown_seconds REAL,
    updated_at REAL NOT NULL
);
"""
POSTGRES_TABLE = """
CREATE TABLE person_limits (
    subject text PRIMARY KEY,
    daily_credit_budget_per_user bigint,
    max_concurrent_tasks_per_user integer,
    cooldown_seconds double precision,
    updated_at double precision NOT NULL
)"""


class PersonLimitsTable(Statements):
    async def set_person_limits(self, subject: str, limits: dict[str, Any]) -> None:
        """Set (None: unset) some of a person's own limits; the others are kept."""
        p = self._dialect.param
        given = {name: limits[name] for name in LIMITS if name in limits}
        insert = ", ".join(["subject", "updated_at", *given])
        values = ", ".join(p(name) for name in ["subject", "updated_at", *given])
        update = ", ".join([f"{name} = excluded.{name}" for name in ["updated_at", *given]])
        sql = f"INSERT INTO person_limits ({insert}) VALUES ({values}) ON CONFLICT (subject) DO UPDATE SET {update}"
        await self._write(sql, {"subject": subject, "updated_at": time.time(), **given})

    async def person_limits(self, subject: str | None = None) -> dict[str, dict[str, Any]]:
        """Every person's own limits by subject (or the one person's), each limit None where unset."""
        p = self._dialect.param
        where = f" WHERE subject = {p('subject')}" if subject is not None else ""
        rows = await self._fetch(f"SELECT * FROM person_limits{where} ORDER BY subject", {"subject": subject})
        return {row["subject"]: {name: row[name] for name in LIMITS} for row in rows}

    async def clear_person_limits(self, subject: str) -> bool:
        sql = f"DELETE FROM person_limits WHERE subject = {self._dialect.param('subject')}"
        return bool(await self._write(sql, {"subject": subject}))
