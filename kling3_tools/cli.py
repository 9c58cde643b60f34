"""`kling3`: the command line. Translation only: every rule lives in the core.

stdout carries results (a task id, a video URL, or one JSON object with
--json); progress, costs and errors go to stderr. Exit codes: 0 ok, 2 bad
input, 1 API or network error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, get_args

from pydantic import ValidationError
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from . import __version__, catalog
from .config import ConfigError, Settings
from .errors import KlingError, RequestValidationError, install_hint
from .models import GenerateRequest, Task, duration_problem, quote
from .records import CliOrigin, TaskRecord, WebhookOrigin
from .service import KlingService
from .store import (
    DEFAULT_STORE,
    SANDBOX_STORE,
    SQLiteTaskStore,
    StatusFilter,
    TaskStore,
    is_postgres_url,
    migrate_postgres,
    open_store,
)

EXIT_OK, EXIT_API_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

# No markup or emoji codes: task ids, URLs and messages come from the API and are printed as they are.
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


class UsageError(Exception):
    """Bad flags or configuration: exit 2."""


# --- argument parsing ------------------------------------------------------


def _whole_number(text: str) -> int | str:
    """An int when the text is one; else the text itself, for the request's checks to name."""
    try:
        return int(text)
    except ValueError:
        return text


def _add_request_flags(parser: argparse.ArgumentParser, *, prompt_required: bool) -> None:
    types = ", ".join(catalog.CATALOG)
    if prompt_required:
        parser.add_argument("prompt", help="what the video shows (up to 2000 characters)")
    else:
        parser.add_argument("prompt", nargs="?", help="optional; with it, the whole request is checked")
    parser.add_argument(
        "-t", "--type", default=catalog.TaskType.PRO_TEXT_TO_VIDEO.value, metavar="TYPE", help=f"task type: {types}"
    )
    # Checked with the rest of the request, so that every problem is listed at once.
    parser.add_argument(
        "-d", "--duration", type=_whole_number, help="seconds, 3-15 (default 5; edits keep the source length)"
    )
    ratios = ", ".join(r.value for r in catalog.AspectRatio)
    parser.add_argument("-a", "--aspect-ratio", metavar="RATIO", help=f"{ratios} (default 16:9)")
    parser.add_argument("--image", metavar="URL", help="start image (image-to-video)")
    parser.add_argument("--end-image", metavar="URL", help="end frame image (image-to-video)")
    parser.add_argument("--video", metavar="URL", help="source video (video-edit, reference-to-video)")
    parser.add_argument(
        "--ref-image", dest="images", action="append", metavar="URL", help="reference image, repeatable (max 7)"
    )
    parser.add_argument(
        "--sound", action=argparse.BooleanOptionalAction, default=None, help="native audio (default on)"
    )
    parser.add_argument("--negative-prompt", metavar="TEXT", help="what to avoid")
    parser.add_argument("--cfg-scale", type=float, metavar="0-1", help="prompt adherence, Kling 3.0 only (default 0.5)")
    parser.add_argument(
        "--keep-original-sound", action=argparse.BooleanOptionalAction, default=None, help="keep source audio (edits)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")


def _add_wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=900, metavar="SECONDS", help="give up waiting after this")
    parser.add_argument("--download", metavar="PATH", help="save the video here (a file or a folder)")


def _add_common_flags(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """Flags every command takes, before or after its name (`kling3 --sandbox tasks`, `kling3 tasks --sandbox`);
    after it they leave unset what was given before."""
    unset: Any = argparse.SUPPRESS if after_command else None
    parser.add_argument("--config", metavar="PATH", default=unset, help="TOML config file (default: $KLING_CONFIG)")
    parser.add_argument(
        "--base-url", metavar="URL", default=unset, help="API base URL (default: https://kling3api.com)"
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        default=argparse.SUPPRESS if after_command else False,
        help="run against an embedded local sandbox: no key, no network, no cost",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        dest="verbose_after" if after_command else "verbose",  # added up in main()
        default=argparse.SUPPRESS if after_command else 0,
        help="log to stderr, and show tracebacks (-vv for debug)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling3",
        description="Make videos with Kling 3.0 and Kling Video O3.",
        epilog=(
            "Configuration: KLING_API_KEY, KLING_BASE_URL, KLING_CONFIG (a TOML file like config.example.toml). "
            "Try it with no key: kling3 --sandbox generate 'a red fox in the snow' --wait"
        ),
    )
    parser.add_argument("--version", action="version", version=f"kling3-tools {__version__}")
    _add_common_flags(parser, after_command=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _add_common_flags(common, after_command=True)
    commands.add_parser = functools.partial(commands.add_parser, parents=[common])  # type: ignore[method-assign]

    generate = commands.add_parser("generate", help="submit a video task (spends credits)")
    _add_request_flags(generate, prompt_required=True)
    generate.add_argument("-w", "--wait", action="store_true", help="wait for the video and print its URL")
    generate.add_argument(
        "--notify-webhook",
        metavar="URL",
        help="record the task and return at once; a running `kling3 poller` POSTs the signed result here",
    )
    _add_wait_flags(generate)

    status = commands.add_parser("status", help="show a task's status")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true", help="print one JSON object")

    wait = commands.add_parser("wait", help="wait for a task to finish and print its video URL")
    wait.add_argument("task_id")
    wait.add_argument("--json", action="store_true", help="print one JSON object")
    _add_wait_flags(wait)

    cost = commands.add_parser("cost", help="show what a request would cost (spends nothing)")
    _add_request_flags(cost, prompt_required=False)

    tasks = commands.add_parser(
        "tasks", help="list the tasks recorded in the store, and the generates whose outcome is unknown"
    )
    tasks.add_argument("--status", choices=get_args(StatusFilter), help="only these")
    tasks.add_argument("--limit", type=int, default=20, help="how many, newest first (default 20)")
    tasks.add_argument("--json", action="store_true", help="print one JSON object")
    tasks_commands = tasks.add_subparsers(dest="tasks_command", metavar="ACTION")
    resolve = tasks_commands.add_parser(
        "resolve",
        parents=[common],
        help="settle a generate whose outcome is unknown, once you have checked the dashboard",
        description="Attach the task the dashboard shows to an unknown attempt (then it is followed like any "
        "task), or release it when nothing was created (then it no longer counts against your limits).",
    )
    resolve.add_argument("attempt_id", help="the attempt-… id that `kling3 tasks` lists")
    outcome = resolve.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--task-id", metavar="ID", help="the task the dashboard shows for it")
    outcome.add_argument("--release", action="store_true", help="nothing was created: stop counting it")

    poller = commands.add_parser(
        "poller",
        help="follow every recorded task and deliver results (webhooks, Discord); runs until Ctrl-C",
        description=(
            "Follow every task in the store and deliver each result to where it was asked for: webhooks, and "
            "Discord channels when DISCORD_TOKEN is set (over REST; no gateway connection). Any number of pollers "
            "may share one store; with PostgreSQL they may run on many machines."
        ),
    )
    poller.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes and restart any that dies (default 1); "
        "on SQLite they split the rate limit, on PostgreSQL they share it",
    )

    store = commands.add_parser("store", help="manage the task store")
    store_commands = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    store_commands.add_parser(
        "migrate",
        parents=[common],
        help="create or upgrade the schema of the configured store (PostgreSQL); safe to run again",
    )

    from .mcp import add_arguments as add_mcp_arguments

    mcp = commands.add_parser("mcp", help="run the MCP server for AI assistants (needs the mcp extra)")
    add_mcp_arguments(mcp, with_common=False)

    commands.add_parser("discord", help="run the Discord bot (needs the discord extra and DISCORD_TOKEN)")

    models = commands.add_parser("models", help="list the task types, their limits and prices")
    models.add_argument("--json", action="store_true", help="print one JSON object")

    sandbox = commands.add_parser("sandbox", help="run the local Kling-compatible sandbox server")
    sandbox.add_argument("--host", help="default 127.0.0.1")
    sandbox.add_argument("--port", type=int, help="default 8765")
    sandbox.add_argument("--finish-seconds", type=float, help="how long each task runs (default 6)")
    sandbox.add_argument("--failure-rate", type=float, help="share of tasks that fail, 0-1")
    sandbox.add_argument("--error-rate", type=float, help="share of requests answered 500, 0-1")
    sandbox.add_argument("--rate-limit", type=float, help="API requests per second before 429s (0 = off)")
    return parser


# --- helpers -----------------------------------------------------------------


def _request_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "type": args.type,
        "prompt": args.prompt,
        "duration": args.duration,
        "aspect_ratio": args.aspect_ratio,
        "image": args.image,
        "end_image": args.end_image,
        "video": args.video,
        "images": args.images,
        "sound": args.sound,
        "negative_prompt": args.negative_prompt,
        "cfg_scale": args.cfg_scale,
        "keep_original_sound": args.keep_original_sound,
    }


def task_json(task: Task) -> dict[str, Any]:
    data = task.model_dump(mode="json")
    data["status"] = task.status.value
    return data


def _describe_cost(request: GenerateRequest) -> str:
    if request.effective_duration is None:
        return f"{request.estimated_credits()} credits ({request.type}, fixed price)"
    sound = "with sound" if request.effective_sound else "silent"
    return f"{request.estimated_credits()} credits ({request.type}, {request.effective_duration}s, {sound})"


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _load_settings(args: argparse.Namespace) -> Settings:
    try:
        return Settings.load(args.config, base_url=args.base_url)
    except (FileNotFoundError, ConfigError) as exc:
        raise UsageError(str(exc)) from None


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _fail(message: str) -> None:
    err.print(Text("error: ", style="bold red") + Text(message))


@contextlib.asynccontextmanager
async def _service(args: argparse.Namespace, settings: Settings) -> AsyncIterator[KlingService]:
    """The service for the configured API, or for an embedded sandbox with --sandbox."""
    async with KlingService.open(settings, sandbox=args.sandbox) as service:
        if args.sandbox:
            err.print(Text(f"Using the embedded sandbox at {service.base_url} (no credits are spent).", style="dim"))
        yield service


async def _wait(service: KlingService, task_id: str, timeout: float) -> Task:
    """Wait with a live line on a terminal, or one line per status change otherwise."""
    started = time.monotonic()
    last_status = ""
    live = err.is_terminal

    def on_update(task: Task) -> None:
        nonlocal last_status
        if task.raw_status != last_status:
            last_status = task.raw_status
            if not live:
                err.print(f"{task.task_id}: {task.raw_status} after {_elapsed(time.monotonic() - started)}")

    if not live:
        return await service.wait(task_id, timeout=timeout, on_update=on_update)
    with err.status(f"{task_id}: waiting") as spinner:

        async def tick() -> None:
            while True:
                spinner.update(f"{task_id}: {last_status or 'waiting'} · {_elapsed(time.monotonic() - started)}")
                await asyncio.sleep(0.5)

        ticker = asyncio.create_task(tick())
        try:
            return await service.wait(task_id, timeout=timeout, on_update=on_update)
        finally:
            ticker.cancel()


async def _finish(service: KlingService, task_id: str, args: argparse.Namespace) -> int:
    """Wait for the task, download it if asked, and print the result."""
    try:
        task = await _wait(service, task_id, args.timeout)
    except asyncio.CancelledError:
        err.print(f"Stopped waiting. The task goes on: kling3{' --sandbox' if args.sandbox else ''} wait {task_id}")
        raise
    path = await service.download(task, args.download) if args.download else None
    if args.json:
        _print_json({**task_json(task), "path": str(path) if path else None})
    else:
        err.print(Text("Done", style="green") + Text(f": {task.task_id}"))
        out.print(task.video_url or "")
        if path:
            out.print(str(path))
    return EXIT_OK


# --- commands ----------------------------------------------------------------


async def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    if args.download and not args.wait:
        raise UsageError("--download needs --wait (or download later: kling3 wait ID --download PATH)")
    request = GenerateRequest.build(**_request_fields(args))
    try:
        origin = WebhookOrigin(url=args.notify_webhook) if args.notify_webhook else CliOrigin()
    except ValidationError as exc:
        raise UsageError(f"--notify-webhook: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    if args.notify_webhook and settings.poller.webhook_secret is None:
        raise UsageError(
            "--notify-webhook needs a signing secret: set [poller] webhook_secret or KLING_POLLER__WEBHOOK_SECRET"
        )
    err.print(f"Cost: {_describe_cost(request)}")

    def created(task: Task) -> None:  # first, before anything is written: the id is never lost
        err.print(f"Submitted {task.task_id} ({task.raw_status}, {task.consumed_credits} credits)")

    async with _service(args, settings) as service:
        record = await service.submit(request, origin, on_created=created)
        if args.notify_webhook:
            err.print("The result will be POSTed to the webhook by a running `kling3 poller`.")
        if args.wait:
            return await _finish(service, record.task_id, args)
    if args.json:
        _print_json(record_json(record))
    else:
        out.print(record.task_id)
    return EXIT_OK


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async with _service(args, settings) as service:
        task = (await service.status(args.task_id)).task
    if args.json:
        _print_json(task_json(task))
    else:
        out.print(f"{task.task_id}  {task.status.value} ({task.raw_status})  {task.consumed_credits} credits")
        for url in task.video_urls:
            out.print(url)
        if task.error_message:
            out.print(f"error: {task.error_message}")
    return EXIT_OK


async def cmd_wait(args: argparse.Namespace, settings: Settings) -> int:
    async with _service(args, settings) as service:
        return await _finish(service, args.task_id, args)


def record_json(record: TaskRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


def _age(seconds: float) -> str:
    if seconds < 3600:
        return _elapsed(seconds)
    return f"{seconds / 3600:.1f}h"


async def _open_store(args: argparse.Namespace, settings: Settings) -> TaskStore:
    """The configured store, or the default file of --sandbox runs or of real ones; no client, no key."""
    return await open_store(
        settings.store.url,
        default_name=SANDBOX_STORE if args.sandbox else DEFAULT_STORE,
        busy_timeout=settings.store.busy_timeout_seconds,
    )


async def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    """Reads the local store only: no key, no network (`tasks resolve --task-id` asks the API)."""
    if args.tasks_command == "resolve":
        return await cmd_resolve(args, settings)
    store = await _open_store(args, settings)
    try:
        records = await store.recent(status=args.status, limit=args.limit)
        attempts = await store.attempts(limit=args.limit) if args.status in (None, "running") else []
    finally:
        await store.close()
    now = time.time()
    if args.json:
        unsettled = [{**a.model_dump(mode="json"), "state": a.state_at(now).value} for a in attempts]
        _print_json({"tasks": [record_json(r) for r in records], "attempts": unsettled})
        return EXIT_OK
    rows = [
        (
            a.attempt_id,
            a.type,
            a.state_at(now).value,
            _age(now - a.created_at),
            str(a.estimated_credits),
            "-",
            f"may have been charged: check the dashboard, then kling3 tasks resolve {a.attempt_id} "
            "--task-id ID (or --release)",
        )
        for a in attempts
    ]
    rows += [
        (
            r.task_id,
            r.type,
            r.display_status,
            _age(now - r.submitted_at),
            str(r.consumed_credits if r.consumed_credits is not None else r.estimated_credits),
            r.delivery.value,
            r.local_path or r.video_url or r.error_message or "",
        )
        for r in records
    ]
    if not out.is_terminal:  # piped: one tab-separated line per task, nothing cut short
        for row in rows:
            sys.stdout.write("\t".join(row) + "\n")
        return EXIT_OK
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
    for row in rows:
        table.add_row(*row)
    out.print(table)
    return EXIT_OK


async def cmd_resolve(args: argparse.Namespace, settings: Settings) -> int:
    async with _service(args, settings) as service:
        record = await service.resolve(args.attempt_id, task_id=None if args.release else args.task_id)
    if record is None:
        err.print(f"Released {args.attempt_id}: it no longer counts against any limit.")
    else:
        err.print(f"{args.attempt_id} is task {record.task_id} ({record.display_status}); it is followed now.")
        out.print(record.task_id)
    return EXIT_OK


async def cmd_poller(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.workers > 1:
        return await _run_workers(args, settings)
    logging.getLogger("kling3_tools.poller").setLevel(logging.INFO)
    async with _service(args, settings) as service, contextlib.AsyncExitStack() as stack:
        if token := os.environ.get("DISCORD_TOKEN"):
            try:
                from bots.notifier import rest_notifier
            except ImportError as exc:
                hint = install_hint("discord")
                raise UsageError(f"DISCORD_TOKEN is set but the discord extra is missing: {hint} ({exc})") from None
            service.register(await stack.enter_async_context(rest_notifier(service, token)))
        poller = service.poller()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # graceful: finish or hand back what is in flight
            loop.add_signal_handler(signum, poller.stop)
        err.print(
            f"Polling for {', '.join(service.delivered_kinds())} tasks of {service.base_url} "
            f"as {poller.owner}; Ctrl-C stops."
        )
        await poller.run()
    return EXIT_OK


WORKER_RESTART_SECONDS = 2.0


async def _run_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Start N `kling3 poller` processes and keep them running; stop them all on Ctrl-C or SIGTERM."""
    if args.sandbox:
        raise UsageError(
            "--workers needs one API that every worker shares: run `kling3 sandbox` and set KLING_BASE_URL to it"
        )
    env = dict(os.environ)
    if not is_postgres_url(settings.store.url):  # SQLite cannot share a bucket between processes: split it
        env["KLING_POLLER__RATE_LIMIT_PER_SECOND"] = str(settings.poller.rate_limit_per_second / args.workers)
    command = [sys.executable, "-m", "kling3_tools"]
    if args.config:
        command += ["--config", args.config]
    if args.base_url:
        command += ["--base-url", args.base_url]
    command += ["-v"] * args.verbose + ["poller"]

    async def start(index: int) -> asyncio.subprocess.Process:
        worker = await asyncio.create_subprocess_exec(*command, env=env, stdin=asyncio.subprocess.DEVNULL)
        err.print(f"worker {index} started (pid {worker.pid})")
        return worker

    workers = [await start(i) for i in range(args.workers)]
    try:
        while True:
            exits = {asyncio.ensure_future(w.wait()): i for i, w in enumerate(workers)}
            done, pending = await asyncio.wait(exits, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            for waiter in done:
                index, code = exits[waiter], waiter.result()
                if code == EXIT_BAD_INPUT:
                    err.print(f"worker {index} refused its configuration; stopping")
                    return EXIT_BAD_INPUT
                err.print(f"worker {index} exited with code {code}; restarting in {WORKER_RESTART_SECONDS:g}s")
                await asyncio.sleep(WORKER_RESTART_SECONDS)
                workers[index] = await start(index)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.terminate()
        await asyncio.gather(*(w.wait() for w in workers))


async def cmd_store(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.store.url
    if not is_postgres_url(url):
        store = await _open_store(args, settings)
        await store.close()
        where = store.path if isinstance(store, SQLiteTaskStore) else url
        out.print(f"SQLite store {where} is ready (SQLite creates its schema when it opens).")
        return EXIT_OK
    before, after = await migrate_postgres(url)
    change = f"migrated from version {before}" if before != after else "already current"
    out.print(f"PostgreSQL task store: schema version {after} ({change}).")
    return EXIT_OK


async def cmd_cost(args: argparse.Namespace, settings: Settings) -> int:
    if args.prompt is not None:
        request = GenerateRequest.build(**_request_fields(args))
        credits, text = request.estimated_credits(), _describe_cost(request)
    else:
        if not isinstance(args.duration, int | None):
            raise RequestValidationError([duration_problem(args.duration)])
        credits = quote(args.type, args.duration, args.sound)
        text = f"{credits} credits"
    if args.json:
        _print_json({"type": args.type, "credits": credits})
    else:
        out.print(text)
    return EXIT_OK


async def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    if args.json:
        _print_json({"models": catalog.describe_models()})
        return EXIT_OK
    table = Table(
        Column("type", no_wrap=True),
        "mode",
        "duration",
        Column("price", overflow="fold"),
        "5s with sound",
        title="Kling 3.0 and O3 task types",
    )
    for row in catalog.describe_models():
        duration = "auto" if isinstance(row["duration"], str) else f"{row['duration'][0]}-{row['duration'][1]}s"
        table.add_row(row["type"], row["mode"], duration, row["price"], str(row["credits_default"]))
    out.print(table)
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from .sandbox.server import serve_forever

    overrides = {
        "host": args.host,
        "port": args.port,
        "finish_seconds": args.finish_seconds,
        "failure_rate": args.failure_rate,
        "error_rate": args.error_rate,
        "rate_limit_per_second": args.rate_limit,
    }
    try:
        options = settings.sandbox.model_validate(
            {**settings.sandbox.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    host, port = options.host, options.port
    err.print(
        f"Sandbox on http://{host}:{port}; use it with:\n"
        f"  export KLING_BASE_URL=http://{host}:{port} KLING_API_KEY={options.api_key}"
    )
    try:
        serve_forever(options, host, port)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another with --port)"
        ) from None
    return EXIT_OK


ASYNC_COMMANDS = {
    "generate": cmd_generate,
    "status": cmd_status,
    "wait": cmd_wait,
    "tasks": cmd_tasks,
    "poller": cmd_poller,
    "store": cmd_store,
    "cost": cmd_cost,
    "models": cmd_models,
}


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
    if args.command == "poller":  # `docker stop` and supervisors send SIGTERM: clean up as on Ctrl-C
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "mcp":
            from .mcp import run as run_mcp

            return run_mcp(args)
        if args.command == "discord":
            try:
                from bots.discord_bot import run as run_discord
            except ImportError as exc:
                raise UsageError(
                    f"the Discord bot needs the discord extra: {install_hint('discord')} ({exc})"
                ) from None
            return run_discord(args)
        settings = _load_settings(args)
        if args.command == "sandbox":
            return cmd_sandbox(args, settings)
        code = asyncio.run(ASYNC_COMMANDS[args.command](args, settings))
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return code
    except (RequestValidationError, UsageError) as exc:
        _fail(str(exc))
        return EXIT_BAD_INPUT
    except KlingError as exc:
        _fail(exc.message)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `kling3 tasks | head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if args.verbose:
            raise
        _fail(f"{type(exc).__name__}: {exc} (run with -v for the details)")
        return EXIT_API_ERROR


def discord_main() -> int:
    """`kling3-discord`: the bot, or one line saying how to install it."""
    try:
        from bots.discord_bot import main as bot_main
    except ImportError as exc:
        _fail(f"the Discord bot needs the discord extra: {install_hint('discord')} ({exc})")
        return EXIT_BAD_INPUT
    return bot_main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
