"""The PostgreSQL store's schema: versioned in `kling3_schema`, changed only by `migrate()`
(`kling3 store migrate`), one advisory lock so two migrations never race."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import PoolTimeout

from ...domain.errors import StoreError, StoreUnavailableError
from .mcp_tasks import POSTGRES_TABLES as MCP_TASKS
from .people import POSTGRES_TABLE as PERSON_LIMITS

Connection = psycopg.AsyncConnection[TupleRow]

_MIGRATION_LOCK = 0x6B6C696E6733  # any constant: one `migrate` at a time

# One entry per schema version; never edit a released entry, append a new one.
MIGRATIONS: list[list[str]] = [
    [
        """
        CREATE TABLE tasks (
            task_id text PRIMARY KEY,
            api_url text NOT NULL,
            type text NOT NULL,
            duration integer,
            request jsonb NOT NULL,
            estimated_credits integer NOT NULL,
            consumed_credits integer,
            submitted_at double precision NOT NULL,
            status text NOT NULL,
            raw_status text NOT NULL,
            outcome text,
            finished_at double precision,
            video_urls jsonb NOT NULL,
            error_message text,
            local_path text,
            due_at double precision,
            poll_count integer NOT NULL,
            origin jsonb NOT NULL,
            origin_kind text NOT NULL,
            delivery text NOT NULL,
            delivery_attempts integer NOT NULL,
            delivery_error text,
            lease_owner text,
            lease_until double precision
        )""",
        # The claim and next_due walk this in due_at order and stop after a few rows.
        "CREATE INDEX tasks_due ON tasks (api_url, due_at) WHERE due_at IS NOT NULL",
        "CREATE INDEX tasks_leased ON tasks (api_url, lease_until) WHERE lease_owner IS NOT NULL",
        "CREATE INDEX tasks_history ON tasks (type, duration, finished_at) WHERE outcome = 'succeeded'",
        "CREATE INDEX tasks_submitted ON tasks (submitted_at)",
        """
        CREATE TABLE rate_limits (
            api_url text PRIMARY KEY,
            tokens double precision NOT NULL,
            updated_at double precision NOT NULL,
            paused_until double precision NOT NULL
        )""",
    ],
    [
        """
        CREATE TABLE attempts (
            attempt_id text PRIMARY KEY,
            api_url text NOT NULL,
            type text NOT NULL,
            request jsonb NOT NULL,
            estimated_credits integer NOT NULL,
            origin jsonb NOT NULL,
            origin_kind text NOT NULL,
            user_id bigint,
            created_at double precision NOT NULL,
            expires_at double precision NOT NULL,
            state text NOT NULL,
            task_id text,
            note text
        )""",
        "CREATE INDEX attempts_open ON attempts (created_at) WHERE state IN ('submitting', 'unknown')",
        "CREATE INDEX attempts_scope ON attempts (origin_kind, user_id, created_at)",
        # The ledger's 24-hour spend query reads only these columns: an index-only scan where it can.
        "CREATE INDEX tasks_spend ON tasks (submitted_at) INCLUDE (origin_kind, outcome, consumed_credits, "
        "estimated_credits)",
        "DROP INDEX tasks_submitted",
    ],
    [
        "ALTER TABLE tasks ADD COLUMN archive_key text",
        "ALTER TABLE tasks ADD COLUMN archived_url text",
    ],
    [
        """
        CREATE TABLE stories (
            story_id text PRIMARY KEY,
            api_url text NOT NULL,
            origin_kind text NOT NULL,
            user_id bigint,
            owner text,
            state text NOT NULL,
            created_at double precision NOT NULL,
            due_at double precision,
            lease_owner text,
            lease_until double precision,
            body text NOT NULL
        )""",
        "CREATE INDEX stories_due ON stories (api_url, due_at) WHERE due_at IS NOT NULL",
        # A story's shots are `reserved` until sent, and count against the budgets meanwhile.
        "CREATE INDEX attempts_held ON attempts (created_at) WHERE state IN ('reserved', 'submitting', 'unknown')",
        "DROP INDEX attempts_open",
    ],
    [
        # Claims walk each served kind's due tasks in due_at order: tasks of a kind no running poller serves
        # (an MCP server that is down) are never read, however many are due.
        "CREATE INDEX tasks_due_kind ON tasks (api_url, origin_kind, due_at) WHERE due_at IS NOT NULL",
        "DROP INDEX tasks_due",
    ],
    [
        # The hourly spend totals the budgets read, kept by triggers on `tasks`: a task counts in the hour it
        # was submitted, for every scope it falls under (`Scope.name`), what `SqlDialect.credits` says unless
        # it failed. The triggers come before the count of the tasks already there: creating them locks out
        # every write to `tasks` until this migration commits, so no task is counted twice or missed.
        "CREATE TABLE spend_hours (scope text NOT NULL, hour bigint NOT NULL, credits bigint NOT NULL, "
        "PRIMARY KEY (scope, hour))",
        """
        CREATE FUNCTION kling3_counted(outcome text, estimated integer, consumed integer) RETURNS integer
        LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE WHEN outcome = 'failed' THEN 0
                        WHEN outcome IS NULL THEN GREATEST(estimated, COALESCE(consumed, 0))
                        ELSE COALESCE(consumed, estimated) END
        $$""",
        """
        CREATE FUNCTION kling3_spend(kind text, user_id_text text, at double precision, amount bigint)
        RETURNS void LANGUAGE sql AS $$
            INSERT INTO spend_hours (scope, hour, credits)
            SELECT scope, floor(at / 3600)::bigint, amount
            FROM (VALUES ('*:*'), (kind || ':*'), (kind || ':' || user_id_text)) AS scopes (scope)
            WHERE scope IS NOT NULL
            ON CONFLICT (scope, hour) DO UPDATE SET credits = spend_hours.credits + excluded.credits
        $$""",
        """
        CREATE FUNCTION kling3_tasks_spend() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                PERFORM kling3_spend(OLD.origin_kind, OLD.origin->>'user_id', OLD.submitted_at,
                                     -kling3_counted(OLD.outcome, OLD.estimated_credits, OLD.consumed_credits));
            END IF;
            IF TG_OP <> 'DELETE' THEN
                PERFORM kling3_spend(NEW.origin_kind, NEW.origin->>'user_id', NEW.submitted_at,
                                     kling3_counted(NEW.outcome, NEW.estimated_credits, NEW.consumed_credits));
            END IF;
            RETURN NULL;
        END
        $$""",
        "CREATE TRIGGER tasks_spend_added AFTER INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION kling3_tasks_spend()",
        "CREATE TRIGGER tasks_spend_removed AFTER DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION kling3_tasks_spend()",
        """
        CREATE TRIGGER tasks_spend_changed AFTER UPDATE ON tasks FOR EACH ROW
        WHEN (kling3_counted(OLD.outcome, OLD.estimated_credits, OLD.consumed_credits)
                  IS DISTINCT FROM kling3_counted(NEW.outcome, NEW.estimated_credits, NEW.consumed_credits)
              OR OLD.origin_kind IS DISTINCT FROM NEW.origin_kind
              OR OLD.origin->>'user_id' IS DISTINCT FROM NEW.origin->>'user_id'
              OR OLD.submitted_at IS DISTINCT FROM NEW.submitted_at)
        EXECUTE FUNCTION kling3_tasks_spend()""",
        """
        INSERT INTO spend_hours (scope, hour, credits)
        SELECT scope, floor(submitted_at / 3600)::bigint,
               SUM(kling3_counted(outcome, estimated_credits, consumed_credits))
        FROM tasks CROSS JOIN LATERAL
             (VALUES ('*:*'), (origin_kind || ':*'), (origin_kind || ':' || (origin->>'user_id'))) AS scopes (scope)
        WHERE scope IS NOT NULL
        GROUP BY 1, 2""",
    ],
    [
        """
        CREATE TABLE characters (
            owner text NOT NULL,
            name text NOT NULL,
            provider text NOT NULL,
            provider_id text NOT NULL,
            description text NOT NULL,
            images jsonb NOT NULL,
            created_at double precision NOT NULL,
            PRIMARY KEY (owner, name)
        )""",
        "CREATE UNIQUE INDEX characters_named ON characters (owner, lower(name))",
        PERSON_LIMITS,
    ],
    MCP_TASKS,
]
SCHEMA_VERSION = len(MIGRATIONS)


def describe_url(url: str) -> str:
    """host:port/dbname, for messages: never the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparsable postgresql:// url"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


NOT_A_CONNECTION_URL = "[store] url is not a PostgreSQL connection URL that libpq can read"


def with_password(url: str, password: str) -> str:
    """The connection string of `url` with `password`, quoted as libpq needs whatever characters it holds."""
    try:
        return make_conninfo(url, password=password)
    except psycopg.ProgrammingError:
        raise StoreError(NOT_A_CONNECTION_URL) from None


# SQLSTATEs of a connection lost or refused: class 08, and a server shutting down, crashed or starting up.
_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03")


def is_connection_error(exc: BaseException) -> bool:
    """The server or the connection to it failed, not the statement (which may then run again); a refused
    password or a missing database is not one."""
    if isinstance(exc, PoolTimeout):
        return True
    return isinstance(exc, psycopg.OperationalError) and (exc.sqlstate or "08").startswith(_CONNECTION_STATES)


async def connect(url: str) -> Connection:
    """A connection of its own; `StoreUnavailableError` when the server does not answer (it may later)."""
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.ProgrammingError:  # libpq quotes the part it could not read, which may be the password
        raise StoreError(NOT_A_CONNECTION_URL) from None
    except psycopg.OperationalError as exc:
        error = StoreUnavailableError if is_connection_error(exc) else StoreError
        raise error(f"cannot reach PostgreSQL at {describe_url(url)}: {without_password(str(exc), url)}") from None


def without_password(text: str, url: str) -> str:
    """`text` with the URL's password (as written, and as libpq reads it) masked, should a message quote it."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return text
    written = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    for secret in {str(password or ""), written} - {""}:
        text = text.replace(secret, "***")
    return text


async def current_version(conn: Connection) -> int:
    cursor = await conn.execute("SELECT to_regclass('kling3_schema') IS NOT NULL")
    exists = await cursor.fetchone()
    if not exists or not exists[0]:
        return 0
    row = await (await conn.execute("SELECT version FROM kling3_schema")).fetchone()
    return int(row[0]) if row else 0


async def migrate(url: str) -> tuple[int, int]:
    """Bring the schema to this version of the project; returns (version before, version after)."""
    async with await connect(url) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        before = await current_version(conn)
        if before > SCHEMA_VERSION:
            raise StoreError(too_new(before))
        if before == 0:
            await conn.execute("CREATE TABLE kling3_schema (version integer NOT NULL)")
            await conn.execute("INSERT INTO kling3_schema VALUES (0)")
        for statements in MIGRATIONS[before:]:
            for statement in statements:
                await conn.execute(statement)
        await conn.execute("UPDATE kling3_schema SET version = %s", (SCHEMA_VERSION,))
    return before, SCHEMA_VERSION


def too_new(version: int) -> str:
    return f"the store's schema is version {version}, newer than this kling3-tools knows ({SCHEMA_VERSION}): upgrade it"
