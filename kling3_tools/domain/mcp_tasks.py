"""A handle an MCP client holds on what one of its tool calls started (MCP Tasks): an unguessable id, kept in the
store beside the video task or story it follows, for the identity that may see it."""

from __future__ import annotations

import secrets
import time
from typing import Any

from pydantic import BaseModel, Field


def new_id() -> str:
    return secrets.token_urlsafe(24)


class McpTaskHandle(BaseModel):
    mcp_task_id: str = Field(default_factory=new_id)
    owner: str  # as `records.owner_of` names owners
    tool: str
    task_id: str | None = None  # the video task it follows
    story_id: str | None = None  # or the story
    result: dict[str, Any] | None = None  # or the answer of a call refused before anything was made
    created_at: float = Field(default_factory=time.time)
    cancelled_at: float | None = None  # ended by its client; what it follows goes on
