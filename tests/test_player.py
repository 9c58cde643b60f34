"""The in-chat player (MCP Apps): what the server advertises through the real MCP client, and the card itself
in a real headless Chromium, hosted by the official `AppBridge` (tests/apps_host/bridge.js, built from the
pinned @modelcontextprotocol/ext-apps by scripts/build_player.sh) in an iframe sandboxed to scripts only,
its tool calls proxied to the real server on the sandbox."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.extension import ClientExtension
from mcp.client.stdio import StdioServerParameters

from harness.helpers import eventually
from kling3_tools.mcp.player import PLAYER_URI

from .conftest import set_options, stats
from .support import http_server, server_env

APP_MIME = "text/html;profile=mcp-app"
BRIDGE = Path(__file__).parent / "apps_host" / "bridge.js"
HOSTILE_PROMPT = '<img src=x onerror="document.title=1"><b>A fox</b> & "friends"'


class AppsSupport(ClientExtension):
    """What a host that renders MCP Apps advertises."""

    identifier = "io.modelcontextprotocol/ui"

    def settings(self) -> dict[str, Any]:
        return {"mimeTypes": [APP_MIME]}


@contextlib.asynccontextmanager
async def client_of(sandbox, tmp_path: Path, *, apps: bool, transport: str = "stdio") -> AsyncIterator[Client]:
    hosts = '["https://cdn.example.com"]'
    env = server_env(sandbox, tmp_path, KLING_MCP__WAIT_SECONDS="0", KLING_MCP__PLAYER_MEDIA_HOSTS=hosts)
    extensions = [AppsSupport()] if apps else None
    if transport == "http":
        with http_server(env) as url:
            async with Client(url, extensions=extensions) as client:
                yield client
        return
    params = StdioServerParameters(command=sys.executable, args=["-m", "kling3_tools.mcp"], env=env)
    async with Client(params, read_timeout_seconds=60, extensions=extensions) as client:
        yield client


@pytest.mark.process
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_the_video_tools_are_bound_to_the_player_and_its_status_tool_is_app_only(sandbox, tmp_path, transport):
    async with client_of(sandbox, tmp_path, apps=True, transport=transport) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        page = (await client.read_resource(PLAYER_URI)).contents[0]
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x"})
        status = await client.call_tool("player_status", {"task_id": made.structured_content["task_id"]})
        stranger = await client.call_tool("player_status", {"task_id": "n75notyours"})
    for name in ("generate_video", "get_video_status", "wait_for_video"):
        assert (tools[name].meta or {})["ui"] == {"resourceUri": PLAYER_URI}
    assert (tools["player_status"].meta or {})["ui"] == {"resourceUri": PLAYER_URI, "visibility": ["app"]}
    assert page.mime_type == APP_MIME
    csp = (page.meta or {})["ui"]["csp"]
    assert csp["resourceDomains"] == sorted(["https://cdn.example.com", sandbox.url])  # media: nothing else
    assert csp["connectDomains"] == []
    assert "https://" not in page.text.split("<script", 1)[0]  # no style or script fetched from anywhere
    assert "<script src" not in page.text
    assert sandbox.api_key not in page.text
    assert status.structured_content["prompt"] == "x" and status.structured_content["request"]["prompt"] == "x"
    assert stranger.is_error


@pytest.mark.process
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_without_apps_the_results_are_what_they_were(sandbox, tmp_path, transport):
    async with client_of(sandbox, tmp_path, apps=False, transport=transport) as client:
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x"})
    assert set(made.structured_content) == {
        "task_id", "type", "source_task", "status", "raw_status", "estimated_credits", "consumed_credits",
        "video_urls", "archived", "local_path", "error_message", "submitted_at", "expected_finish", "resource_uri",
        "next_step",
    }  # fmt: skip
    assert not [c for c in made.content if getattr(c, "type", "") == "resource"]


# --- the card in a real browser ------------------------------------------------------------------------

HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>host</title>
<style>body{margin:0;background:#eee} iframe{border:0;width:340px;height:520px;background:#fff}</style></head>
<body><iframe id="app" sandbox="allow-scripts"></iframe></body></html>"""

CONNECT = """async ({html, theme}) => {
  const iframe = document.getElementById("app");
  iframe.srcdoc = html;
  await new Promise((done) => iframe.addEventListener("load", done, {once: true}));
  const bridge = new AppBridge(null, {name: "test-host", version: "1"}, {serverTools: {}, openLinks: {}},
                               {hostContext: {theme}});
  bridge.oncalltool = async (params) => JSON.parse(await window.kling3CallTool(JSON.stringify(params)));
  window.openedLinks = [];
  bridge.onopenlink = async (params) => { window.openedLinks.push(params.url); return {}; };
  const ready = new Promise((done) => { bridge.oninitialized = done; });
  await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
  await ready;
  window.bridge = bridge;
}"""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def with_csp(html: str, csp: dict[str, Any]) -> str:
    """The page as a host serves it: under the CSP its `_meta.ui.csp` asks for."""
    media = " ".join(csp.get("resourceDomains", [])) or "'none'"
    policy = (
        f"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        f"media-src {media}; img-src {media} data:; connect-src 'none'"
    )
    return html.replace("<head>", f'<head><meta http-equiv="Content-Security-Policy" content="{policy}">', 1)


@pytest.fixture
async def browser():
    playwright_api = pytest.importorskip("playwright.async_api")
    executable = chromium_path()
    if executable is None:
        if os.environ.get("KLING3_REQUIRE_BROWSER"):
            pytest.fail("no chromium: `apt-get install chromium` (Debian)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"]
        )
        yield browser
        await browser.close()


async def open_card(browser, client: Client, arguments: dict[str, Any], result: Any, *, theme: str = "light"):
    """A host page with the player in a sandboxed iframe; the tool's input and result sent as a host would."""
    resource = (await client.read_resource(PLAYER_URI)).contents[0]
    page = await browser.new_page(viewport={"width": 440, "height": 560})

    async def call_tool(params: str) -> str:
        request = json.loads(params)
        answer = await client.call_tool(request["name"], request.get("arguments") or {})
        return json.dumps(answer.model_dump(mode="json", by_alias=True, exclude_none=True))

    await page.expose_function("kling3CallTool", call_tool)
    await page.set_content(HOST_PAGE)
    await page.add_script_tag(content=BRIDGE.read_text())
    html = with_csp(resource.text, (resource.meta or {})["ui"]["csp"])
    await page.evaluate(CONNECT, {"html": html, "theme": theme})
    await page.evaluate("(args) => window.bridge.sendToolInput({arguments: args})", arguments)
    await page.evaluate(
        "(result) => window.bridge.sendToolResult(result)",
        result.model_dump(mode="json", by_alias=True, exclude_none=True),
    )
    return page, page.frames[1]


async def test_the_card_shows_progress_then_plays_the_video(browser, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=3.0)
    arguments = {"type": "std-text-to-video", "prompt": HOSTILE_PROMPT, "duration": 5}
    async with client_of(sandbox, tmp_path, apps=True) as client:
        made = await client.call_tool("generate_video", arguments)
        page, card = await open_card(browser, client, arguments, made)
        await eventually(lambda: _text(card, "#state"), timeout=20)
        assert (await card.text_content("#state")) in ("running", "queued")
        assert await card.is_visible("#progress")
        await eventually(lambda: _text(card, "#price"), timeout=20)  # drawn from the task, maybe after the state
        assert (await card.text_content("#price")) == "300 credits"
        assert (await card.text_content("#prompt")) == HOSTILE_PROMPT  # markup shown as text
        assert await card.locator("#card img, #card b").count() == 0
        assert await card.evaluate("() => document.documentElement.scrollWidth <= innerWidth")  # narrow: no overflow
        await _screenshot(page, "player-running.png")
        await eventually(lambda: _has(card, '[data-status="succeeded"]'), timeout=60)
        source = await card.get_attribute("#video", "src")
        assert source is not None and source.startswith(f"{sandbox.url}/media/") and source.endswith(".mp4")
        playing = await card.evaluate(
            """async () => {
                const video = document.getElementById("video");
                video.muted = true;
                await video.play();
                const start = video.currentTime;
                await new Promise((done) => setTimeout(done, 1200));
                return {readyState: video.readyState, start, now: video.currentTime};
            }"""
        )
        await card.click("#download")
        opened = await page.evaluate("() => window.openedLinks")
        await _screenshot(page, "player-finished.png")
        await page.close()
    assert playing["readyState"] >= 2 and playing["now"] > playing["start"], playing
    assert opened == [source]


async def test_make_another_shows_the_price_and_spends_only_after_a_click(browser, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.5)
    arguments = {"type": "std-text-to-video", "prompt": "A red fox", "duration": 5}
    async with client_of(sandbox, tmp_path, apps=True) as client:
        made = await client.call_tool("generate_video", arguments)
        page, card = await open_card(browser, client, arguments, made, theme="dark")
        await eventually(lambda: _has(card, '[data-status="succeeded"]'), timeout=60)
        theme = await card.evaluate("() => document.documentElement.dataset.theme")
        assert not await card.is_visible("#spend")  # nothing to spend with until asked
        await card.click("#again")
        asked = await card.text_content("#again-price")
        before = len((await client.call_tool("list_videos", {})).structured_content["videos"])
        await card.click("#spend")
        await eventually(lambda: _has(card, '[data-status="running"], [data-status="queued"]'), timeout=20)
        after = len((await client.call_tool("list_videos", {})).structured_content["videos"])
        await page.close()
    assert theme == "dark"
    assert asked == "This spends 300 credits." and after == before + 1


async def test_a_failed_video_says_why_and_what_it_cost(browser, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3, failure_rate=1.0)
    arguments = {"type": "std-text-to-video", "prompt": "A fox"}
    async with client_of(sandbox, tmp_path, apps=True) as client:
        made = await client.call_tool("generate_video", arguments)
        page, card = await open_card(browser, client, arguments, made)
        await eventually(lambda: _has(card, '[data-status="failed"]'), timeout=60)
        reason = await card.text_content("#reason")
        money = await card.text_content("#money")
        await page.close()
    assert reason and "failure" in reason
    assert money == "A failed video is not charged."


async def _text(frame: Any, selector: str) -> bool:
    return bool((await frame.text_content(selector) or "").strip())


async def _has(frame: Any, selector: str) -> bool:
    return await frame.locator(selector).count() > 0


async def _screenshot(page: Any, name: str) -> None:
    """For the README: written when KLING3_SCREENSHOTS names a folder."""
    if folder := os.environ.get("KLING3_SCREENSHOTS"):
        await page.locator("#app").screenshot(path=str(Path(folder) / name))


async def test_a_hostile_video_address_never_reaches_the_page(browser, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3, video_url_template="javascript:parent.postMessage('x','*')//{task_id}")
    arguments = {"type": "std-text-to-video", "prompt": "A fox"}
    async with client_of(sandbox, tmp_path, apps=True) as client:
        made = await client.call_tool("generate_video", arguments)
        page, card = await open_card(browser, client, arguments, made)
        await eventually(lambda: _has(card, '[data-status="succeeded"]'), timeout=60)
        source = await card.get_attribute("#video", "src")
        await card.click("#download")
        opened = await page.evaluate("() => window.openedLinks")
        note = await card.text_content("#video-note")
        await page.close()
    assert source is None and opened == []
    assert note == "The video's address is not a web address; it is not shown."


async def test_make_another_spends_once_however_often_it_is_clicked(browser, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3)
    arguments = {"type": "std-text-to-video", "prompt": "A red fox", "duration": 5}
    async with client_of(sandbox, tmp_path, apps=True) as client:
        made = await client.call_tool("generate_video", arguments)
        page, card = await open_card(browser, client, arguments, made)
        await eventually(lambda: _has(card, '[data-status="succeeded"]'), timeout=60)
        await card.click("#again")
        # The second click lands while the first spend is on its way; the new video runs long enough to be seen
        # running however loaded the machine is (it finished before the card's first look under six workers).
        set_options(sandbox, generate_delay=1.0, finish_seconds=30)
        await card.evaluate("() => { const b = document.getElementById('spend'); b.click(); b.click(); b.click(); }")
        await eventually(lambda: _has(card, '[data-status="running"], [data-status="queued"]'), timeout=20)
        await page.close()
    assert stats(sandbox)["requests"]["generate"] == 2  # the first video and one more, not four


async def test_a_status_that_cannot_be_read_is_not_called_a_video_that_never_started(browser, sandbox, tmp_path):
    async with client_of(sandbox, tmp_path, apps=True) as client:
        failed = await client.call_tool("get_video_status", {"task_id": "n75gone"})
        page, card = await open_card(browser, client, {"task_id": "n75gone"}, failed)
        await eventually(lambda: _has(card, "#problem:not([hidden])"), timeout=20)
        state, money = await card.text_content("#state"), await card.text_content("#money")
        await page.close()
    assert failed.is_error
    assert state in ("status unknown", "not followed")
    assert money is not None and "Nothing was spent" not in money
