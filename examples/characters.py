"""Make a character from two pictures, then place it in a video by name (Kling's own API). With no Kling keys it
runs on the embedded sandbox, in Kling's format: no key, no cost. The pictures are drawn here with Pillow."""

import asyncio
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from kling3_tools import KlingService, Settings
from kling3_tools.domain.records import LOCAL_OWNER


def picture(folder: Path, name: str, colour: str) -> Path:
    image = Image.new("RGB", (512, 512), "white")
    ImageDraw.Draw(image).ellipse((96, 96, 416, 416), fill=colour)
    image.save(folder / name)
    return folder / name


async def main() -> None:
    sandbox = not os.environ.get("KLING_ACCESS_KEY")
    with tempfile.TemporaryDirectory() as folder:
        front, side = picture(Path(folder), "front.png", "orange"), picture(Path(folder), "side.png", "darkorange")
        async with KlingService.open(Settings.load(provider="kling"), sandbox=sandbox) as service:
            if not await service.characters.of(LOCAL_OWNER):
                await service.characters.create(LOCAL_OWNER, "Pumpkin", [front, side], "a round orange cat")
            print("characters:", [c.name for c in await service.characters.of(LOCAL_OWNER)])
            fields = {"type": "o3-std-text-to-video", "prompt": "Pumpkin naps in the sun", "characters": ["Pumpkin"]}
            record = await service.make(fields)
            task = await service.wait(record.task_id, timeout=900)
            print("saved:", await service.keep(task) or task.video_url)
            await service.characters.delete(LOCAL_OWNER, "Pumpkin")


asyncio.run(main())
