"""One video of three shots, cut by the model itself (native multi-shot, Kling's own API). With no Kling keys it
runs on the embedded sandbox, in Kling's format: no key, no cost. For a longer film, see multi_shot.toml."""

import asyncio
import os

from kling3_tools import KlingService, Settings


async def main() -> None:
    sandbox = not os.environ.get("KLING_ACCESS_KEY")
    shots = ["3:A fox wakes in its den", "2:It stretches", "4:It runs out into the snow"]
    async with KlingService.open(Settings.load(provider="kling"), sandbox=sandbox) as service:
        record = await service.make({"type": "pro-text-to-video", "shots": shots})
        print(f"{record.task_id}: {record.duration} s, {record.estimated_credits} {service.unit}")
        task = await service.wait(record.task_id, timeout=900)
        print("saved:", await service.keep(task) or task.video_url)


asyncio.run(main())
