"""Make a video of someone, then make them say a line (Kling's own API). With no Kling keys it runs on the
embedded sandbox, in Kling's format: no key, no cost."""

import asyncio
import os

from kling3_tools import KlingService, Settings


async def main() -> None:
    sandbox = not os.environ.get("KLING_ACCESS_KEY")
    async with KlingService.open(Settings.load(provider="kling"), sandbox=sandbox) as service:
        prompt = "A lighthouse keeper looks into the camera, close-up"
        speaker = await service.make({"type": "o3-std-text-to-video", "prompt": prompt, "duration": 5})
        await service.wait(speaker.task_id, timeout=900)
        spoken = await service.lip_sync(speaker.task_id, text="The storm passes by morning.")
        print(f"{spoken.task_id}: {spoken.duration} s of speech, {spoken.estimated_credits} {service.unit}")
        task = await service.wait(spoken.task_id, timeout=900)
        print("saved:", await service.keep(task) or task.video_url)


asyncio.run(main())
