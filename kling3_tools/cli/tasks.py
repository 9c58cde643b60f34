"""The commands that read or settle the local task store: `tasks`, `tasks resolve`, `store migrate`."""

from __future__ import annotations

import argparse
import time

from rich.table import Column, Table

from ..adapters.store import (
    DEFAULT_STORE,
    SANDBOX_STORE,
    SQLiteTaskStore,
    TaskStore,
    is_postgres_url,
    migrate_postgres,
    open_store,
)
from ..adapters.store.stats import capacity_of, capacity_warning
from ..config import Settings
from ..domain.ledger import DAY_SECONDS
from ..launch import EXIT_OK
from . import output
from .commands import open_service
from .output import age, err, print_json, record_json


async def open_local_store(args: argparse.Namespace, settings: Settings) -> TaskStore:
    """The configured store, or the default file of --sandbox runs or of real ones; no client, no key."""
    return await open_store(
        settings.store.url,
        password=settings.store.password,
        default_name=SANDBOX_STORE if args.sandbox else DEFAULT_STORE,
        busy_timeout=settings.store.busy_timeout_seconds,
    )


async def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    """Reads the local store only: no key, no network (`tasks resolve --task-id` asks the API, and
    `--refresh-urls` the storage)."""
    if args.tasks_command == "resolve":
        return await cmd_resolve(args, settings)
    store = await open_local_store(args, settings)
    try:
        records = await store.recent(status=args.status, limit=args.limit)
        attempts = await store.attempts(limit=args.limit) if args.status in (None, "running") else []
    finally:
        await store.close()
    if args.refresh_urls:  # signed for showing here; nothing is written
        async with open_service(args, settings) as service:
            records = await service.videos.refresh_urls(records)
    now = time.time()
    if args.json:
        unsettled = [{**a.model_dump(mode="json"), "state": a.shown_state(now)} for a in attempts]
        print_json({"tasks": [record_json(r) for r in records], "attempts": unsettled})
        return EXIT_OK
    rows = [
        (
            a.attempt_id,
            a.type,
            a.shown_state(now),
            age(now - a.created_at),
            str(a.estimated_credits),
            "-",
            f"task {a.task_id}: the next poller sweep records and follows it"
            if a.awaiting_record
            else f"may have been charged: check the dashboard, then kling3 tasks resolve {a.attempt_id} "
            "--task-id ID (or --release)",
        )
        for a in attempts
    ]
    rows += [
        (
            r.task_id,
            r.type + (f" of {r.source_task}" if r.source_task else ""),
            r.display_status,
            age(now - r.submitted_at),
            str(r.consumed_credits if r.consumed_credits is not None else r.estimated_credits),
            r.delivery.value,
            r.local_path or r.video_url or r.error_message or "",
        )
        for r in records
    ]
    table = Table(
        Column("task id", no_wrap=True),
        Column("type", overflow="fold"),
        "status",
        "age",
        "credits",
        "delivery",
        Column("result", overflow="fold", ratio=1),  # a URL folds onto more lines, never cut short
        title="Recorded tasks",
    )
    output.print_rows(table, rows)
    return EXIT_OK


async def cmd_resolve(args: argparse.Namespace, settings: Settings) -> int:
    async with open_service(args, settings) as service:
        record = await service.resolve(args.attempt_id, task_id=None if args.release else args.task_id)
    if record is None:
        err.print(f"Released {args.attempt_id}: it no longer counts against any limit.")
    else:
        err.print(f"{args.attempt_id} is task {record.task_id} ({record.display_status}); it is followed now.")
        output.out.print(record.task_id)
    return EXIT_OK


async def cmd_store(args: argparse.Namespace, settings: Settings) -> int:
    if args.store_command == "prune":
        return await cmd_prune(args, settings)
    if args.store_command == "stats":
        return await cmd_stats(args, settings)
    url = settings.store.url
    if not is_postgres_url(url):
        store = await open_local_store(args, settings)
        await store.close()
        where = store.path if isinstance(store, SQLiteTaskStore) else url
        output.out.print(f"SQLite store {where} is ready (SQLite creates its schema when it opens).")
        return EXIT_OK
    before, after = await migrate_postgres(url, settings.store.password)
    change = f"migrated from version {before}" if before != after else "already current"
    output.out.print(f"PostgreSQL task store: schema version {after} ({change}).")
    return EXIT_OK


async def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    """What an operator needs to size the pollers: the store's state and what its request budget can follow."""
    store = await open_local_store(args, settings)
    try:
        stats = await store.stats()
    finally:
        await store.close()
    rate = settings.poller.rate_limit_per_second
    capacity = capacity_of(stats, rate)
    warning = capacity_warning(stats, rate)
    if args.json:
        print_json({**stats.as_dict(), "capacity": capacity and capacity.as_dict(), "warning": warning})
        return EXIT_OK
    say = output.out.print
    say(f"tasks: {stats.running} running, {stats.succeeded} succeeded, {stats.failed} failed, "
        f"{stats.timed_out} timed out; {stats.to_deliver} ended and still to deliver")  # fmt: skip
    late = f", the oldest {age(stats.oldest_due_seconds)} late" if stats.oldest_due_seconds is not None else ""
    say(f"due now: {stats.due_now}{late}")
    if capacity is None:
        say(f"capacity: no successful video yet to measure ({rate:g} status checks/s budget)")
    else:
        say(f"history: {capacity.checks_per_video:.1f} checks per video; submission to success p50 "
            f"{age(stats.seconds_p50 or 0)}, p90 {age(stats.seconds_p90 or 0)}")  # fmt: skip
        say(f"capacity at {rate:g} checks/s: about {capacity.videos_per_day:,} videos a day, "
            f"{capacity.running_at_once:,} running at once")  # fmt: skip
    if warning:
        err.print(f"warning: {warning}")
    return EXIT_OK


async def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    store = await open_local_store(args, settings)
    try:
        tasks, attempts = await store.prune(time.time() - args.older_than * DAY_SECONDS)
    finally:
        await store.close()
    output.out.print(
        f"Pruned {tasks} delivered tasks and {attempts} settled attempts older than {args.older_than:g} days."
    )
    return EXIT_OK
