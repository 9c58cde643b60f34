"""The sandbox a `--sandbox` command runs in its own process.

Every embedded sandbox (one per command, each on its own port) is one API with
one account, kept in a file of the user data folder: tasks recorded by one
command are followed by the next, or by a poller.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..store import default_store_path
from .options import SandboxOptions

if TYPE_CHECKING:
    from .server import SandboxServer

API_URL = "sandbox://embedded"  # its name in the task store, whatever port it listens on
ACCOUNT_FILE = "sandbox-account.db"
VIDEOS = "sandbox-videos"  # its finished videos, kept: its URLs are served only while a process runs it


def start(options: SandboxOptions) -> SandboxServer:
    """A sandbox server for this process (its web stack loads only here, when a command asks for it)."""
    from .server import SandboxServer

    return SandboxServer(options, state_path=default_store_path(ACCOUNT_FILE))


def served_by(base_url: str, video_urls: list[str]) -> list[str]:
    """The videos of an embedded sandbox, as this process's sandbox serves them (the port changes)."""
    return [re.sub(r"^https?://[^/]+", base_url, url) for url in video_urls]
