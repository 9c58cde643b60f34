"""The PostgreSQL store's dialect and its longer statements, apart from the code that runs them."""

from __future__ import annotations

from .rows import HOUR_SECONDS, SqlDialect

ATTEMPT_EXISTS = "SELECT 1 FROM attempts WHERE attempt_id = %(id)s"
SETTLED_AS = (
    "SELECT 1 FROM attempts WHERE attempt_id = %(attempt_id)s AND state = 'submitted' AND task_id = %(task_id)s"
)

POSTGRES = SqlDialect(
    param=lambda name: f"%({name})s",
    json=lambda name: f"%({name})s::jsonb",
    user_id="(origin->>'user_id')::bigint",
    owner="(origin->>'owner')",
    story_id="(origin->>'story_id')",
    greatest="GREATEST",
    hour=lambda column: f"floor({column} / {HOUR_SECONDS})::bigint",
)

# One index walk per served kind (tasks_due_kind), each stopping after `limit` unlocked rows, then the soonest
# `limit` of those: due tasks of kinds this worker does not serve are never read.
CLAIM_SQL = """
    WITH due AS (
        SELECT picked.task_id FROM unnest(%(kinds)s::text[]) AS kind(name)
        CROSS JOIN LATERAL (
            SELECT task_id, due_at FROM tasks
            WHERE api_url = %(api_url)s AND origin_kind = kind.name AND due_at <= %(now)s
              AND (lease_until IS NULL OR lease_until < %(now)s)
            ORDER BY due_at
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ) AS picked
        ORDER BY picked.due_at
        LIMIT %(limit)s
    )
    UPDATE tasks SET lease_owner = %(owner)s, lease_until = %(until)s
    FROM due WHERE tasks.task_id = due.task_id
    RETURNING tasks.*"""

# An index walk per served kind, and one over the leased tasks (few: those in flight), rather than one MIN over
# every tracked task.
NEXT_DUE_SQL = """
    SELECT LEAST(
        (SELECT min(first.due_at) FROM unnest(%(kinds)s::text[]) AS kind(name)
         CROSS JOIN LATERAL (
             SELECT due_at FROM tasks
             WHERE api_url = %(api_url)s AND origin_kind = kind.name AND due_at IS NOT NULL
               AND (lease_until IS NULL OR lease_until < due_at)
             ORDER BY due_at LIMIT 1) AS first),
        (SELECT min(lease_until) FROM tasks
         WHERE api_url = %(api_url)s AND lease_owner IS NOT NULL AND due_at IS NOT NULL
           AND origin_kind = ANY(%(kinds)s) AND lease_until >= due_at)
    ) AS due"""
