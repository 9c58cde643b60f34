"""The tables beside the tasks whose SQL both backends share: characters, people's limits, MCP task handles."""

from __future__ import annotations

from .characters import CharacterTable
from .mcp_tasks import McpTaskTable
from .people import PersonLimitsTable


class SideTables(CharacterTable, PersonLimitsTable, McpTaskTable):
    pass
