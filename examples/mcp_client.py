"""Your own agent talking to the kling3 MCP server: list its tools, price a video, make it. Starts
`kling3-mcp --sandbox` over stdio, so it needs no key and spends nothing (needs the mcp extra)."""

import asyncio
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters


async def main() -> None:
    server = StdioServerParameters(command=sys.executable, args=["-m", "kling3_tools.mcp", "--sandbox"])
    async with Client(server) as kling:
        print("tools:", ", ".join(tool.name for tool in (await kling.list_tools()).tools))
        cost = await kling.call_tool("estimate_video_cost", {"type": "pro-text-to-video", "duration": 5})
        print(cost.structured_content["price"])
        video = {"type": "pro-text-to-video", "prompt": "A lighthouse in a storm", "wait_seconds": 50}
        made = await kling.call_tool("generate_video", video)
        print(made.structured_content["status"], made.structured_content["video_urls"])


asyncio.run(main())
