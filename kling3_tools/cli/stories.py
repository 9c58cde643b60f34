"""`kling3 story …`: plan a story, run it, follow it, retry a shot."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from ..config import Settings
from ..domain.errors import KlingError, SpendingRefusedError
from ..domain.story import Story
from ..domain.story_plan import Plan, plan
from ..domain.story_record import StoryRecord, StoryState
from ..launch import EXIT_API_ERROR, EXIT_OK
from ..service import KlingService
from . import output
from .commands import open_service, origin_of
from .output import err, print_json

FOLLOW_EVERY = 0.5  # seconds between looks at the store while --wait advances a story here


async def cmd_story(args: argparse.Namespace, settings: Settings) -> int:
    actions = {"plan": _plan, "run": _run, "status": _status, "retry": _retry, "list": _list}
    return await actions[args.story_command](args, settings)


async def _plan(args: argparse.Namespace, settings: Settings) -> int:
    """Every problem of every shot at once, or the order, the prices and whether the limits allow it."""
    story_plan = plan(Story.from_toml(args.file), settings.pricing[0], settings.takes_fields)
    refusal = None
    async with open_service(args, settings) as service:
        try:
            await service.check_spend(story_plan.total, dearest=story_plan.dearest)
        except SpendingRefusedError as exc:
            refusal = exc.message
    if args.json:
        print_json(
            {
                "title": story_plan.story.title,
                "stages": story_plan.stages,
                "credits": {shot: story_plan.credits(shot) for shot in story_plan.requests},
                "total": story_plan.total,
                "film": story_plan.story.film,
                "refused": refusal,
            }
        )
    else:
        _print_plan(story_plan, args.file, settings.pricing[1])
        if refusal:
            err.print(f"Your limits would refuse it: {refusal}")
    return EXIT_API_ERROR if refusal else EXIT_OK


def _print_plan(story_plan: Plan, name: str, unit: str) -> None:
    title = story_plan.story.title or name
    output.out.print(f"{title}: {len(story_plan.requests)} shots, {story_plan.total} {unit} in all")
    for number, stage in enumerate(story_plan.stages, start=1):
        shots = ", ".join(f"{shot} ({story_plan.credits(shot)} {unit})" for shot in stage)
        output.out.print(f"  step {number}{' (at once)' if len(stage) > 1 else ''}: {shots}")
    output.out.print(f"  film: {' + '.join(story_plan.story.film)} ({story_plan.story.cut.transition})")


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    story = Story.from_toml(args.file)
    origin = origin_of(args, settings)
    async with open_service(args, settings) as service:
        record = await service.start_story(story, origin, film_path=args.out)
        err.print(f"Started {record.story_id}: {record.credits} {service.unit} reserved for {len(record.shots)} shots.")
        return await _follow_or_show(service, record, args)


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    async with open_service(args, settings) as service:
        return await _follow_or_show(service, await _story(service, args.story_id), args)


async def _retry(args: argparse.Namespace, settings: Settings) -> int:
    async with open_service(args, settings) as service:
        record = await service.stories.retry(args.story_id, args.shot)
        err.print(f"{record.story_id}: {args.shot} runs again ({record.summary()}).")
        return await _follow_or_show(service, record, args)


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_service(args, settings) as service:
        records = await service.stories.recent(limit=args.limit)
    if args.json:
        print_json([_story_json(record) for record in records])
        return EXIT_OK
    for record in records:
        output.out.print(
            f"{record.story_id}  {record.state.value:9}  {record.credits:>5} {service.unit}  {record.story.title}  "
            f"({record.summary()})"
        )
    if not records:
        err.print("No stories yet.")
    return EXIT_OK


async def _story(service: KlingService, story_id: str) -> StoryRecord:
    record = await service.stories.get(story_id)
    if record is None:
        raise KlingError(f"No story {story_id} in this store (`kling3 story list` shows them).")
    return record


async def _follow_or_show(service: KlingService, record: StoryRecord, args: argparse.Namespace) -> int:
    if args.wait:
        record = await _advance_here(service, record.story_id, args.timeout)
    elif args.story_command == "run" and args.sandbox:
        err.print("The embedded sandbox ends with this command: add --wait to see the story through.")
    if args.json:
        print_json(_story_json(record))
    else:
        _print_story(record, service.unit)
    failed = record.state is StoryState.FAILED
    return EXIT_API_ERROR if failed else EXIT_OK


async def _advance_here(service: KlingService, story_id: str, timeout: float) -> StoryRecord:
    """Run a poller in this process until the story has ended and been delivered (or `timeout`)."""
    poller = service.poller()
    running = asyncio.create_task(poller.run())
    deadline = time.monotonic() + timeout
    shown = ""
    try:
        while True:
            record = await _story(service, story_id)
            if record.summary() != shown:
                shown = record.summary()
                err.print(f"{story_id}: {shown}")
            if record.state is not StoryState.RUNNING and record.due_at is None:
                return record
            if running.done():
                running.result()  # the poller stopped: say why
            if time.monotonic() > deadline:
                err.print(f"Stopped waiting; the story goes on: kling3 story status {story_id} --wait")
                return record
            await asyncio.sleep(FOLLOW_EVERY)
    finally:
        poller.stop()
        await asyncio.gather(running, return_exceptions=True)


def _print_story(record: StoryRecord, unit: str) -> None:
    err.print(f"{record.story_id} {record.story.title}: {record.state.value} ({record.credits} {unit})")
    for shot_id, shot in record.shots.items():
        detail = " ".join(part for part in (shot.task_id, shot.video_url, shot.note) if part)
        err.print(f"  {shot_id:12} {shot.state.value:10} {detail}")
    if record.note:
        err.print(f"  {record.note}")
    if record.state is StoryState.SUCCEEDED:
        output.out.print(record.film_path or "")
        if record.film_url:
            output.out.print(record.film_url)
    elif record.state is StoryState.RUNNING:
        output.out.print(record.story_id)


def _story_json(record: StoryRecord) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude={"story"}) | {"title": record.story.title}
