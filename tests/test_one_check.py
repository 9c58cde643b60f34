"""Every front end checks a request once per generate (`KlingService.check`), then prepares and submits what
was checked: nothing is examined twice, and no front end builds the request itself."""

from __future__ import annotations

import pytest
from mcp.client import Client

from harness import fake_discord as fd
from harness.helpers import eventually
from kling3_tools.adapters.assets import inputs
from kling3_tools.cli import main
from kling3_tools.config import Settings
from kling3_tools.mcp.serve import loaded_server

from .support import ALICE, bot_settings, deliver, running_bot


@pytest.fixture
def examined(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prompt of each request examined from now on."""
    seen: list[str] = []
    real = inputs.examine

    def counted(fields, files):
        seen.append(fields["prompt"])
        return real(fields, files)

    monkeypatch.setattr(inputs, "examine", counted)
    return seen


def test_the_cli_examines_a_generate_once(sandbox, tmp_path, examined, monkeypatch):
    monkeypatch.setenv("KLING_API_KEY", sandbox.api_key)
    monkeypatch.setenv("KLING_BASE_URL", sandbox.url)
    monkeypatch.setenv("KLING_STORE__URL", f"sqlite:///{tmp_path / 'cli.db'}")
    assert main(["generate", "a fox from the cli"]) == 0
    assert examined == ["a fox from the cli"]


async def test_the_mcp_server_examines_a_generate_once(sandbox, tmp_path, examined):
    settings = Settings.load(
        api_key=sandbox.api_key, base_url=sandbox.url, store={"url": f"sqlite:///{tmp_path / 'm.db'}"}
    )
    async with loaded_server(settings, sandbox=False) as server, Client(server) as client:
        made = await client.call_tool(
            "generate_video", {"type": "std-text-to-video", "prompt": "a fox over mcp", "wait_seconds": 0}
        )
    assert not made.is_error
    assert examined == ["a fox over mcp"]


async def test_the_discord_bot_examines_a_generate_once(fake, sandbox, tmp_path, examined):
    async with running_bot(bot_settings(sandbox, tmp_path)) as bot:
        deliver(bot, fd.slash("generate", ALICE, prompt="a fox on discord", duration=5))

        async def started() -> bool:
            return bool(await bot.service.store.recent(origin_kind="discord"))

        await eventually(started)
    assert examined == ["a fox on discord"]
