"""The official MCP Tasks client (`@modelcontextprotocol/ext-tasks`, pinned in `harness/ext_tasks/package-lock.json`,
on the official TypeScript MCP client, with the Node 22 it runs on) and `driver.mjs`, which runs one action with it
and says what happened."""

from __future__ import annotations

from pathlib import Path

from .helpers import npm_ci

CLIENT = Path(__file__).with_name("ext_tasks")


def installed() -> list[str]:
    """The command that runs the driver (its packages installed)."""
    npm_ci(CLIENT)
    return [str(CLIENT / "node_modules" / ".bin" / "node"), str(CLIENT / "driver.mjs")]
