"""`kling3 story …`: stories from the command line."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..errors import SpendingRefusedError
from ..launch import EXIT_API_ERROR, EXIT_OK
from ..stories.model import Story
from ..stories.plan import plan
from . import output
from .commands import open_service
from .output import err, print_json


async def cmd_story_plan(args: argparse.Namespace, settings: Settings) -> int:
    """Every problem of every shot at once, or the order, the prices and whether the limits allow it."""
    story_plan = plan(Story.from_toml(args.file))
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
        title = story_plan.story.title or args.file
        output.out.print(f"{title}: {len(story_plan.requests)} shots, {story_plan.total} credits in all")
        for number, stage in enumerate(story_plan.stages, start=1):
            shots = ", ".join(f"{shot} ({story_plan.credits(shot)} credits)" for shot in stage)
            output.out.print(f"  step {number}{' (at once)' if len(stage) > 1 else ''}: {shots}")
        output.out.print(f"  film: {' + '.join(story_plan.story.film)} ({story_plan.story.cut.transition})")
        if refusal:
            err.print(f"Your limits would refuse it: {refusal}")
    return EXIT_API_ERROR if refusal else EXIT_OK
