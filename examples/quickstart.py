"""Make a video from Python. With no KLING_API_KEY it runs on the embedded sandbox: no key, no cost."""

import asyncio
import os

from kling3_tools import GenerateRequest, KlingService, Settings


async def main() -> None:
    request = GenerateRequest.build(type="std-text-to-video", prompt="A paper boat on a rainy street", duration=5)
    print(f"{request.estimated_credits()} credits")  # from the catalog: nothing is sent
    sandbox = not os.environ.get("KLING_API_KEY")
    async with KlingService.open(Settings.load(), sandbox=sandbox) as service:
        record = await service.submit(request)  # reserved in the ledger, then sent: the task id is never lost
        print("submitted", record.task_id)
        task = await service.wait(record.task_id, timeout=900)
        print("saved", await service.download(task, "videos/"))


asyncio.run(main())
