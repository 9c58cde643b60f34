"""The tool list the server answers before its core has loaded: `manifest.json`, written from the loaded
server by `python scripts/write_mcp_manifest.py` (a test fails when it no longer matches, and says so)."""

from __future__ import annotations

import functools
import json
from importlib import resources

from mcp_types import Tool

MANIFEST = "manifest.json"


@functools.cache
def tools() -> list[Tool]:
    listed = json.loads(resources.files(__package__).joinpath(MANIFEST).read_text())
    return [Tool.model_validate(tool) for tool in listed["tools"]]


def dumped(listed: list[Tool]) -> str:
    """The manifest's text for a loaded server's tools."""
    as_listed = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed]
    return json.dumps({"tools": as_listed}, indent=1, sort_keys=True) + "\n"
