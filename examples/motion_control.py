"""Move a picture as a video moves (Kling 3.0 motion control, Kling's own API): here the motion comes from a
video made first. With no Kling keys it runs on the embedded sandbox, in Kling's format: no key, no cost."""

import asyncio
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from kling3_tools import KlingService, Settings


async def main() -> None:
    sandbox = not os.environ.get("KLING_ACCESS_KEY")
    async with KlingService.open(Settings.load(provider="kling"), sandbox=sandbox) as service:
        dance = await service.make({"type": "o3-std-text-to-video", "prompt": "A person dances a slow waltz"})
        motion = await service.wait(dance.task_id, timeout=900)
        with tempfile.TemporaryDirectory() as folder:
            figure = Path(folder) / "figure.png"
            image = Image.new("RGB", (512, 768), "white")
            ImageDraw.Draw(image).rectangle((192, 128, 320, 640), fill="navy")
            image.save(figure)
            motion_video = await service.download(motion, Path(folder) / "dance.mp4")
            fields = {"type": "std-motion-control", "image": figure, "video": motion_video, "duration": 5}
            record = await service.make(fields)  # `duration`: the motion video's seconds, which Kling bills
        print(f"{record.task_id}: {record.estimated_credits} {service.unit}")
        task = await service.wait(record.task_id, timeout=900)
        print("saved:", await service.keep(task) or task.video_url)


asyncio.run(main())
