"""Write `kling3_tools/mcp/manifest.json` (the tools the MCP server lists before its core loads) from the
code: run it after changing a tool, a request field or the catalog."""

import asyncio
from pathlib import Path

from kling3_tools.mcp import manifest
from kling3_tools.mcp.serve import current_manifest

target = Path(manifest.__file__).with_name(manifest.MANIFEST)
target.write_text(asyncio.run(current_manifest()))
print(f"wrote {target}")
