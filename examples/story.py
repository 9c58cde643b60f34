"""Plan a three-shot story (spends nothing), then make the film. With no KLING_API_KEY it runs on the
embedded sandbox: no key, no cost. Needs the stories extra (`pip install "kling3-tools[stories]"`)."""

import asyncio
import os
from pathlib import Path

from kling3_tools import KlingService, Settings
from kling3_tools.domain.story import Story
from kling3_tools.domain.story_plan import plan


async def main() -> None:
    story = Story.from_toml(Path(__file__).with_name("lighthouse.toml"))
    story_plan = plan(story)  # every problem of every shot at once, the order and the price
    print(f"{story.title}: {story_plan.total} credits, in this order: {story_plan.stages}")
    sandbox = not os.environ.get("KLING_API_KEY")
    async with KlingService.open(Settings.load(), sandbox=sandbox) as service, service.polling():
        record = await service.start_story(story, film_path="lighthouse.mp4")  # the whole story is reserved
        while record.state == "running":
            await asyncio.sleep(1)
            record = await service.stories.get(record.story_id) or record
    print(record.summary())


asyncio.run(main())
