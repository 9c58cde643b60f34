"""The commands that talk to the API: generate, status and wait."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from rich.text import Text

from ..config import Settings
from ..domain.models import GenerateRequest
from ..domain.records import CliOrigin, WebhookOrigin
from ..domain.tasks import Task
from ..launch import EXIT_OK, UsageError
from ..service import KlingService
from ..workflows.observe import Observer
from . import output
from .output import describe_cost, elapsed, err, print_json, record_json, task_json


@contextlib.asynccontextmanager
async def open_service(
    args: argparse.Namespace, settings: Settings, observer: Observer | None = None, *, wait_for_store: bool = False
) -> AsyncIterator[KlingService]:
    """The service for the configured API, or for an embedded sandbox with --sandbox."""
    async with KlingService.open(
        settings, sandbox=args.sandbox, observer=observer, wait_for_store=wait_for_store
    ) as service:
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
                err.print(f"{task.task_id}: {task.raw_status} after {elapsed(time.monotonic() - started)}")

    if not live:
        return await service.wait(task_id, timeout=timeout, on_update=on_update)
    with err.status(f"{task_id}: waiting") as spinner:

        async def tick() -> None:
            while True:
                spinner.update(f"{task_id}: {last_status or 'waiting'} · {elapsed(time.monotonic() - started)}")
                await asyncio.sleep(0.5)

        ticker = asyncio.create_task(tick())
        try:
            return await service.wait(task_id, timeout=timeout, on_update=on_update)
        finally:
            ticker.cancel()


async def finish(service: KlingService, task_id: str, args: argparse.Namespace) -> int:
    """Wait for the task, download it if asked, and print the result."""
    try:
        task = await _wait(service, task_id, args.timeout)
    except asyncio.CancelledError:
        err.print(f"Stopped waiting. The task goes on: kling3{' --sandbox' if args.sandbox else ''} wait {task_id}")
        raise
    # Where the video is: the file asked for, or a kept copy where the API's URL dies with this command.
    path = await service.download(task, args.download) if args.download else await service.keep(task)
    if args.json:
        print_json({**task_json(task), "path": str(path) if path else None})
    else:
        err.print(Text("Done", style="green") + Text(f": {task.task_id}"))
        if service.videos.urls_last:
            output.out.print(task.video_url or "")
        if path:
            output.out.print(str(path))
    return EXIT_OK


def origin_of(args: argparse.Namespace, settings: Settings) -> CliOrigin | WebhookOrigin:
    """Where the result goes: `--notify-webhook`'s URL (checked, with a signing secret), or the terminal."""
    try:
        origin = WebhookOrigin(url=args.notify_webhook) if args.notify_webhook else CliOrigin()
    except ValidationError as exc:
        raise UsageError(f"--notify-webhook: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    if args.notify_webhook and settings.poller.webhook_secret is None:
        raise UsageError(
            "--notify-webhook needs a signing secret: set [poller] webhook_secret or KLING_POLLER__WEBHOOK_SECRET"
        )
    return origin


async def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    return await submit_fields(args, settings, GenerateRequest.fields_of(vars(args)))


async def submit_fields(args: argparse.Namespace, settings: Settings, fields: dict[str, Any]) -> int:
    """Check, price, upload and submit a request's fields, then wait or print its id (generate, extend, lipsync)."""
    if args.download and not args.wait:
        raise UsageError("--download needs --wait (or download later: kling3 wait ID --download PATH)")
    checked = KlingService.check(fields)  # every problem the fields alone show, before anything starts
    origin = origin_of(args, settings)

    def created(task: Task) -> None:  # first, before anything is written: the id is never lost
        charged = f", {task.consumed_credits} {service.unit}" if task.consumed_credits is not None else ""
        err.print(f"Submitted {task.task_id} ({task.raw_status}{charged})")

    async with open_service(args, settings) as service:
        service.check_ready_to_spend()  # a missing key is said before the price, not after it
        checked = await service.examine(fields, checked=checked)  # a source task and characters found
        err.print(f"Cost: {describe_cost(checked.request, service.prices, service.unit)}")
        request = await service.prepare(checked)  # local files uploaded
        record = await service.submit(request, origin, on_created=created)
        if getattr(args, "notify_webhook", None):
            err.print("The result will be POSTed to the webhook by a running `kling3 poller`.")
        if args.wait:
            return await finish(service, record.task_id, args)
    if args.json:
        print_json(record_json(record))
    else:
        output.out.print(record.task_id)
    return EXIT_OK


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async with open_service(args, settings) as service:
        task = (await service.status(args.task_id)).task
    if args.json:
        print_json(task_json(task))
    else:
        output.out.print(f"{task.task_id}  {task.status.value} ({task.raw_status})  {task.consumed_credits} credits")
        for url in task.video_urls:
            output.out.print(url)
        if task.error_message:
            output.out.print(f"error: {task.error_message}")
    return EXIT_OK


async def cmd_wait(args: argparse.Namespace, settings: Settings) -> int:
    async with open_service(args, settings) as service:
        return await finish(service, args.task_id, args)
