"""Make a video, then its next shot (Kling's own API). With no Kling keys it runs on the embedded sandbox, in
Kling's format: no key, no cost. With KLING_ACCESS_KEY and KLING_SECRET_KEY set, it spends units."""

import asyncio
import os

from kling3_tools import KlingService, Settings


async def main() -> None:
    sandbox = not os.environ.get("KLING_ACCESS_KEY")
    async with KlingService.open(Settings.load(provider="kling"), sandbox=sandbox) as service:
        first = await service.make(
            {"type": "o3-std-text-to-video", "prompt": "A fox trots through snow", "duration": 5}
        )
        await service.wait(first.task_id, timeout=900)
        after = await service.extend(first.task_id, "The fox leaps over a fallen log", duration=5)
        print(f"{after.task_id} goes on from {after.source_task} ({after.estimated_credits} {service.unit})")
        task = await service.wait(after.task_id, timeout=900)
        print("next shot:", await service.keep(task) or task.video_url)


asyncio.run(main())
