"""Stories run for real: reserved whole in the ledger, advanced by pollers on the sandbox (whose clips are real
MP4s), stills and films decoded back, a worker killed mid-story, a failing shot, from every front end."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.helpers import SECRET, eventually
from kling3_tools.adapters.sandbox.app import SAMPLE_VIDEO
from kling3_tools.adapters.store import open_store
from kling3_tools.config import Settings
from kling3_tools.domain.errors import RequestValidationError, SpendingRefusedError
from kling3_tools.domain.ledger import Attempt, AttemptState, SpendLimit
from kling3_tools.domain.records import CliOrigin, WebhookOrigin
from kling3_tools.domain.story import Story
from kling3_tools.domain.story_plan import plan
from kling3_tools.domain.story_record import ShotState, StoryRecord, StoryState
from kling3_tools.service import KlingService

from .conftest import set_options, stats

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from .support import FAST, LIGHTHOUSE  # noqa: E402

EDIT_CHAIN = """
title = "Three edits"
type = "o3-pro-text-to-video"

[[shots]]
id = "storm"
prompt = "A lighthouse in a storm"
duration = 3

[[shots]]
id = "snow"
type = "o3-pro-video-edit"
video = "@storm"
prompt = "Heavy snowfall"

[[shots]]
id = "night"
type = "o3-pro-video-edit"
video = "@snow"
prompt = "At night"
"""


def frames(data: bytes | Path) -> list[Any]:
    """Every decoded frame of a clip, as RGB arrays."""
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with av.open(source) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def seconds(path: Path | bytes) -> float:
    source = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    with av.open(source) as container:
        stream = container.streams.video[0]
        last = max(frame.time + float(frame.duration * frame.time_base) for frame in container.decode(stream))
        return float(last)


def frame_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.video[0].average_rate
        return 1 / float(rate)


def sandbox_settings(tmp_path: Path, **poller: Any) -> Settings:
    return Settings.load(
        store={"url": f"sqlite:///{tmp_path / 'tasks.db'}"},
        sandbox={"finish_seconds": 0.3},
        poller={"media_dir": str(tmp_path / "media"), "rate_limit_per_second": 100, **poller},
    )


@asynccontextmanager
async def following(service: KlingService) -> AsyncIterator[None]:
    poller = service.poller()
    running = asyncio.create_task(poller.run())
    try:
        yield
    finally:
        poller.stop()
        await running


async def ended(service: KlingService, story_id: str) -> StoryRecord:
    async def done() -> bool:
        record = await service.stories.get(story_id)
        return record is not None and record.state is not StoryState.RUNNING and record.due_at is None

    await eventually(done, timeout=60)
    record = await service.stories.get(story_id)
    assert record is not None
    return record


async def test_a_story_runs_end_to_end_and_its_last_frame_is_the_clips_last_decoded_frame(tmp_path):
    async with KlingService.open(sandbox_settings(tmp_path), sandbox=True) as service, following(service):
        started = await service.start_story(Story.from_text(LIGHTHOUSE), film_path=tmp_path / "film.mp4")
        assert {shot.state for shot in started.shots.values()} == {ShotState.WAITING}
        reserved = [await service.store.get_attempt(shot.attempt_id) for shot in started.shots.values()]
        assert {a.state for a in reserved if a} == {AttemptState.RESERVED}  # nothing sent yet, all held
        record = await ended(service, started.story_id)
        ship = await service.get(str(record.shots["ship"].task_id))
        assert ship is not None
        still = (await service.http.get(ship.request["image"])).content
        snow_clip = (await service.http.get(str(record.shots["snow"].video_url))).content
        snow = await service.get(str(record.shots["snow"].task_id))
        storm_url = record.shots["storm"].video_url
    assert record.state is StoryState.SUCCEEDED, record.note
    assert snow is not None and snow.request["video"] == storm_url  # the edit chain: storm's clip went on
    sent = np.asarray(Image.open(io.BytesIO(still)).convert("RGB"))
    assert np.array_equal(sent, frames(snow_clip)[-1])  # the last decoded frame, pixel for pixel
    film = Path(str(record.film_path))
    clip = seconds(SAMPLE_VIDEO)
    assert abs(seconds(film) - 3 * clip) <= 2 * frame_seconds(SAMPLE_VIDEO) + 1e-6  # ± one frame per joint
    assert len(frames(film)) >= 3 * len(frames(SAMPLE_VIDEO)) - 2
    assert record.film_url  # kept in the (sandbox's) asset store


@pytest.mark.process
def test_the_cli_runs_a_story_and_hands_back_the_film(tmp_path):
    story = tmp_path / "lighthouse.toml"
    story.write_text(LIGHTHOUSE)
    env = {
        **os.environ,
        "KLING_STORE__URL": f"sqlite:///{tmp_path / 'tasks.db'}",
        "KLING_SANDBOX__FINISH_SECONDS": "0.3",
        "KLING_POLLER__MEDIA_DIR": str(tmp_path / "media"),
    }
    film = tmp_path / "out" / "film.mp4"
    run = subprocess.run(
        [sys.executable, "-m", "kling3_tools", "--sandbox", "story", "run", str(story), "--wait", "--out", str(film)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == str(film)
    assert "ship succeeded" in run.stderr
    assert abs(seconds(film) - 3 * seconds(SAMPLE_VIDEO)) <= 2 * frame_seconds(SAMPLE_VIDEO) + 1e-6
    listed = subprocess.run(
        [sys.executable, "-m", "kling3_tools", "--sandbox", "story", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    [entry] = json.loads(listed.stdout)
    assert entry["state"] == "succeeded" and entry["title"] == "The lighthouse"


async def test_the_whole_story_is_reserved_at_once_or_not_at_all(store):
    story = Story.from_text(EDIT_CHAIN)
    story_plan = plan(story)
    service_limit = SpendLimit("budget", daily_credits=story_plan.total * 3 // 2)  # room for one story, not two

    def reservation() -> tuple[StoryRecord, list[Attempt]]:
        origin = CliOrigin(story_id=StoryRecord.new_id())
        attempts = [
            Attempt.new(r, api_url="x", origin=origin, deadline=0, state=AttemptState.RESERVED)
            for r in story_plan.requests.values()
        ]
        record = StoryRecord(story_id=str(origin.story_id), api_url="x", story=story, origin=origin, shots={})
        return record, attempts

    tries = [reservation() for _ in range(6)]
    results = await asyncio.gather(
        *(store.reserve_story(record, attempts, [service_limit]) for record, attempts in tries), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, SpendingRefusedError)]
    assert len(refused) == 5 and all(r is None or isinstance(r, SpendingRefusedError) for r in results)
    assert refused[0].message.startswith(f"This story would cost {story_plan.total} credits, but only")
    assert len(await store.recent_stories()) == 1
    held = await store.attempts(open_only=True)
    assert len(held) == 3 and {a.state for a in held} == {AttemptState.RESERVED}  # the refused left nothing
    assert (await store.usage(service_limit)).credits == story_plan.total
    one_at_a_time = SpendLimit("x", max_running=1)
    assert (await store.usage(one_at_a_time)).running == 1  # a story counts once, whatever its shots
    record, attempts = reservation()
    with pytest.raises(SpendingRefusedError, match="1 videos in progress"):
        await store.reserve_story(record, attempts, [one_at_a_time])


async def test_a_failing_shot_stops_what_needs_it_and_releases_their_credits(tmp_path, receiver):
    settings = sandbox_settings(tmp_path, webhook_secret=SECRET)
    async with KlingService.open(settings, sandbox=True) as service, following(service), httpx.AsyncClient() as http:
        await http.post(f"{service.base_url}/sandbox/options", json={"failure_rate": 1.0})
        started = await service.start_story(Story.from_text(EDIT_CHAIN), WebhookOrigin(url=receiver.url))
        record = await ended(service, started.story_id)
        usage = await service.usage(service.budget)
        await http.post(f"{service.base_url}/sandbox/options", json={"failure_rate": 0.0})
        again = await service.stories.retry(started.story_id, "storm")
        assert again.shots["storm"].attempt_id != record.shots["storm"].attempt_id
        retried = await ended(service, started.story_id)
        sandbox_stats = (await http.get(f"{service.base_url}/sandbox/stats")).json()
    assert record.state is StoryState.FAILED
    assert record.note and record.note.startswith("shot `storm` failed")
    assert record.shots["storm"].state is ShotState.FAILED
    assert {record.shots[i].state for i in ("snow", "night")} == {ShotState.RELEASED}
    assert "not sent: shot `storm` failed" in str(record.shots["snow"].note)
    assert "not sent: shot `snow` released" in str(record.shots["night"].note)
    assert usage.credits == 0  # the failed shot is not charged; the two never sent are released
    assert retried.state is StoryState.SUCCEEDED, retried.note
    assert sandbox_stats["requests"]["generate"] == 4  # storm twice, then snow and night once each
    events = [e["event"] for e in receiver.events]
    assert events == ["story.failed", "story.succeeded"]
    assert receiver.events[0]["story"]["shots"]["snow"]["state"] == "released"


def story_env(sandbox: Any, db: Path, **extra: str) -> dict[str, str]:
    """`kling3` against this sandbox and store, its poller quick (the killed and resumed runs share it)."""
    return {
        **os.environ,
        "KLING_BASE_URL": sandbox.url,
        "KLING_API_KEY": sandbox.api_key,
        "KLING_STORE__URL": f"sqlite:///{db}",
        "KLING_POLLER__MEDIA_DIR": str(db.parent / "media"),
        "KLING_POLLER__DENSE_INTERVAL_SECONDS": "0.2",
        "KLING_POLLER__LEASE_SECONDS": "3",
        **extra,
    }


def kling3_story(env: dict[str, str], *args: str, output: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kling3_tools", "story", *args], env=env, stdout=output, stderr=output, text=True
    )


@pytest.mark.process
async def test_a_story_killed_mid_run_resumes_and_sends_no_shot_twice(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    story = tmp_path / "edits.toml"
    story.write_text(EDIT_CHAIN)
    db = tmp_path / "tasks.db"
    env = story_env(sandbox, db, KLING_POLLER__EXPECTED_SECONDS="[0.5, 3.0]")
    first = kling3_story(env, "run", str(story), "--wait", output=subprocess.DEVNULL)
    store = await open_store(f"sqlite:///{db}")
    try:

        async def second_shot_sent() -> bool:
            attempts = await store.attempts(open_only=False)
            return sum(a.state is AttemptState.SUBMITTED for a in attempts) == 2

        await eventually(second_shot_sent, timeout=60)
        first.send_signal(signal.SIGKILL)  # between two steps: shot 2 sent and recorded, shot 3 not yet
        first.wait()
        [killed] = await store.recent_stories()
        assert killed.state is StoryState.RUNNING
        resumed = kling3_story(env, "status", killed.story_id, "--wait", "--json")
        out, errors = resumed.communicate(timeout=90)
        assert resumed.returncode == 0, errors
        record = json.loads(out)
    finally:
        if first.poll() is None:
            first.kill()
        await store.close()
    assert record["state"] == "succeeded"
    assert stats(sandbox)["requests"]["generate"] == 3  # every shot once: nothing was sent twice
    assert len({shot["task_id"] for shot in record["shots"].values()}) == 3


@pytest.mark.process
async def test_a_shot_whose_post_went_unanswered_is_never_sent_again(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3)
    story = tmp_path / "edits.toml"
    story.write_text(EDIT_CHAIN)
    db = tmp_path / "tasks.db"
    env = story_env(
        sandbox, db, KLING_TIMEOUT_SECONDS="2", KLING_MAX_RETRIES="0", KLING_POLLER__EXPECTED_SECONDS="[0.3, 3.0]"
    )
    first = kling3_story(env, "run", str(story), "--wait", output=subprocess.DEVNULL)
    store = await open_store(f"sqlite:///{db}")
    try:

        async def first_shot_recorded() -> bool:
            return any(a.state is AttemptState.SUBMITTED for a in await store.attempts(open_only=False))

        await eventually(first_shot_recorded, timeout=60)
        set_options(sandbox, generate_delay=30)  # the next POST hangs: sent, never answered
        await eventually(lambda: stats(sandbox)["requests"].get("generate") == 2, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait()
        set_options(sandbox, generate_delay=0)
        [killed] = await store.recent_stories()
        resumed = kling3_story(env, "status", killed.story_id, "--wait", "--json")
        out, errors = resumed.communicate(timeout=90)
        record = json.loads(out)
        held = await store.attempts(open_only=True)
    finally:
        if first.poll() is None:
            first.kill()
        await store.close()
    assert resumed.returncode == 1, errors
    assert record["state"] == "failed"
    assert record["shots"]["snow"]["state"] == "unknown"
    assert "may have been created and charged" in record["note"]
    assert record["shots"]["night"]["state"] == "released"
    assert stats(sandbox)["requests"]["generate"] == 2  # the unanswered shot was not sent again
    [unknown] = held
    assert unknown.state_at(time.time()) is AttemptState.UNKNOWN  # it counts until resolved
    refused = kling3_story(env, "retry", killed.story_id, "--shot", "night")
    assert refused.wait(timeout=60) == 1 and "resolve it first" in (refused.communicate()[1] or "")

    # Resolved by hand (the dashboard shows nothing was created): the story may go on, and does.
    resolve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kling3_tools", "tasks", "resolve", unknown.attempt_id, "--release", env=env
    )
    assert await resolve.wait() == 0
    again = kling3_story(env, "retry", killed.story_id, "--shot", "night", "--wait", "--json")
    out, errors = again.communicate(timeout=90)
    assert again.returncode == 0, errors
    assert json.loads(out)["state"] == "succeeded"
    assert stats(sandbox)["requests"]["generate"] == 4  # snow and night once more; storm not again


async def test_a_reserved_shot_is_sent_once_whoever_tries(sandbox, tmp_path):
    settings = Settings.load(
        api_key=sandbox.api_key, base_url=sandbox.url, store={"url": f"sqlite:///{tmp_path / 'tasks.db'}"}
    )
    async with KlingService.open(settings, schedule=FAST) as service:
        started = await service.start_story(Story.from_text(EDIT_CHAIN))
        attempt = await service.store.get_attempt(started.shots["storm"].attempt_id)
        assert attempt is not None
        request = plan(started.story).requests["storm"]
        sent = await asyncio.gather(*(service.spending.submit_reserved(attempt, request) for _ in range(5)))
    assert len([record for record in sent if record is not None]) == 1
    assert stats(sandbox)["requests"]["generate"] == 1


def lighthouse_json() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(LIGHTHOUSE)


@pytest.mark.process
async def test_an_assistant_plans_approves_and_follows_a_story_over_mcp(tmp_path):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    from .support import FAST_POLLER, elicitation

    env = {
        **os.environ,
        "KLING_STORE__URL": f"sqlite:///{tmp_path / 'mcp.db'}",
        "KLING_SANDBOX__FINISH_SECONDS": "0.3",
        "KLING_POLLER__MEDIA_DIR": str(tmp_path / "media"),
        "KLING_MCP__CONFIRM_ABOVE_CREDITS": "500",
        **FAST_POLLER,
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "kling3_tools.mcp", "--sandbox"], env=env)
    callback, asked = elicitation("accept")
    async with Client(params, read_timeout_seconds=60, elicitation_callback=callback) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        planned = (await client.call_tool("plan_story", {"story": lighthouse_json()})).structured_content
        broken = await client.call_tool("start_story", {"story": {**lighthouse_json(), "cut": {"shots": ["fog"]}}})
        started = await client.call_tool("start_story", {"story": lighthouse_json()})
        assert not started.is_error, started.content
        status = started.structured_content
        assert status is not None and status["state"] == "running"

        async def done() -> bool:
            now = await client.call_tool("get_story_status", {"story_id": status["story_id"]})
            return (now.structured_content or {}).get("state") != "running"

        await eventually(done, timeout=90)
        resource = await client.read_resource(status["resource_uri"])
        stranger = await client.call_tool("get_story_status", {"story_id": "story-0000000000000000"})
    assert {"plan_story", "start_story", "get_story_status"} <= tools
    assert planned is not None and planned["stages"] == [["storm"], ["snow"], ["ship"]]
    assert broken.is_error and "`fog`" in str(broken.content) and "Nothing was spent" in str(broken.content)
    assert asked == [f"This will spend {planned['total']} credits (a story of 3 shots). Continue?"]
    story = json.loads(resource.contents[0].text)  # type: ignore[union-attr]
    assert story["state"] == "succeeded", story
    assert {shot["state"] for shot in story["shots"].values()} == {"succeeded"}
    assert abs(seconds(Path(story["film_path"])) - 3 * seconds(SAMPLE_VIDEO)) <= 2 * frame_seconds(SAMPLE_VIDEO) + 1e-6
    assert stranger.is_error and "not one of this client's stories" in str(stranger.content)


async def test_a_member_runs_a_story_from_discord_after_seeing_its_plan(monkeypatch, tmp_path):
    from .support import ALICE, deliver, fake_discord, followups, running_bot, texts

    settings = Settings.load(
        store={"url": f"sqlite:///{tmp_path / 'bot.db'}"},
        sandbox={"finish_seconds": 0.3},
        poller={"media_dir": str(tmp_path / "media"), "rate_limit_per_second": 100, "lease_seconds": 2},
        discord={"cooldown_seconds": 0},
    )
    from harness import fake_discord as fd

    async with fake_discord(monkeypatch) as fake, running_bot(settings, sandbox=True) as bot:
        story = fake.host("lighthouse.toml", LIGHTHOUSE.encode(), "text/plain")
        command = fd.slash("story", ALICE, attachments={"file": story})
        deliver(bot, command)
        await eventually(lambda: any("Continue?" in str(c.body) for c in followups(fake, command)))
        [question] = [c for c in followups(fake, command) if "Continue?" in str(c.body)]
        assert fake.channel_posts() == []  # nothing public, nothing spent before Confirm
        buttons = {b["label"]: b["custom_id"] for row in question.body["components"] for b in row["components"]}
        deliver(bot, fd.button(buttons["Confirm"], ALICE, question.answer))
        await eventually(lambda: any("film is ready" in str(c.body) for c in fake.channel_posts()), timeout=60)

        async def saved_as_ended() -> bool:  # the poller saves the story after posting the film
            return all(story.state is not StoryState.RUNNING for story in await bot.service.stories.recent())

        await eventually(saved_as_ended)
        [record] = await bot.service.stories.recent()
    total = plan(Story.from_text(LIGHTHOUSE)).total
    assert f"{total} credits" in question.body["content"] and "step 3: `ship`" in question.body["content"]
    assert f"Started `{record.story_id}`" in texts(followups(fake, command))
    [ready] = [c for c in fake.channel_posts() if "film is ready" in str(c.body)]
    assert ready.body["content"].startswith(f"<@{ALICE}>")
    assert ready.files == [(f"{record.story_id}.mp4", Path(str(record.film_path)).stat().st_size)]
    embed_posts = [c for c in fake.channel_posts() if c.body and c.body.get("embeds")]
    assert len(embed_posts) == 1  # one public embed for the whole story, edited in place
    message_id = embed_posts[0].answer["id"]
    edits = fake.find("PATCH", f"/channels/{fd.CHANNEL_ID}/messages/{message_id}")
    assert "succeeded" in edits[-1].body["embeds"][0]["title"]
    shots = {f["name"]: f["value"] for f in edits[-1].body["embeds"][0]["fields"]}["Shots"]
    assert shots.count("succeeded") == 3
    assert record.state is StoryState.SUCCEEDED


async def test_a_story_runs_on_either_store_and_retention_removes_it_once_delivered(store_url, tmp_path):
    settings = Settings.load(
        store={"url": store_url},
        sandbox={"finish_seconds": 0.2},
        poller={"media_dir": str(tmp_path / "media"), "rate_limit_per_second": 100, "lease_seconds": 2},
    )
    async with KlingService.open(settings, sandbox=True) as service:
        async with following(service):
            started = await service.start_story(Story.from_text(EDIT_CHAIN))
            record = await ended(service, started.story_id)
        assert record.state is StoryState.SUCCEEDED, record.note
        assert [story.story_id for story in await service.stories.recent()] == [started.story_id]
        await service.store.prune(time.time() + 1)
        assert await service.stories.get(started.story_id) is None


def test_a_story_is_bounded_in_shots_and_title():
    shots = "".join(f'\n[[shots]]\nid = "s{i}"\nprompt = "x"\n' for i in range(51))
    with pytest.raises(RequestValidationError) as refused:
        Story.from_text(f'title = "{"t" * 201}"\ntype = "std-text-to-video"\n{shots}')
    problems = " ".join(refused.value.problems)
    assert "50" in problems and "200" in problems, problems


async def test_a_film_that_cannot_be_made_ends_the_story_rather_than_wedging_it(tmp_path):
    settings = sandbox_settings(tmp_path, max_download_mb=0.001)  # every clip is over the cap
    async with KlingService.open(settings, sandbox=True) as service, following(service):
        started = await service.start_story(Story.from_text(EDIT_CHAIN))
        record = await ended(service, started.story_id)
    assert record.state is StoryState.FAILED
    assert record.note and record.note.startswith("the film could not be made") and "cap" in record.note
    assert {shot.state for shot in record.shots.values()} == {ShotState.SUCCEEDED}
    assert not (tmp_path / "media" / started.story_id).exists()  # its clips were not left behind


async def test_an_unreadable_story_row_is_set_aside_and_the_others_go_on(store):
    story = Story.from_text(EDIT_CHAIN)
    good = StoryRecord(story_id="story-good", api_url="x", story=story, origin=CliOrigin(), shots={})
    bad = StoryRecord(story_id="story-bad", api_url="x", story=story, origin=CliOrigin(), shots={}, due_at=0.0)
    for record in (bad, good):
        await store.reserve_story(record, [Attempt.new(plan(story).requests["storm"], api_url="x",
                                                       origin=CliOrigin(), deadline=0,
                                                       state=AttemptState.RESERVED)], [])  # fmt: skip
    p = store._dialect.param
    await store._write(f"UPDATE stories SET body = {p('body')} WHERE story_id = 'story-bad'", {"body": '{"x": 1}'})
    claimed = await store.claim_stories(owner="me", now=time.time() + 1, lease_seconds=5, limit=4, api_url="x",
                                        kinds=["cli"])  # fmt: skip
    assert [record.story_id for record in claimed] == ["story-good"]
    assert [record.story_id for record in await store.recent_stories()] == ["story-good"]
    assert await store.next_story_due(api_url="x", kinds=["cli"]) is not None  # the good one, leased


@pytest.mark.process
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # resources/subscribe
async def test_a_2025_session_follows_its_own_story_and_hears_how_it_ended(sandbox, tmp_path):
    import tomllib

    from .support import Heard, legacy_client

    set_options(sandbox, finish_seconds=0.3)
    heard = Heard()
    async with legacy_client(sandbox, tmp_path, heard) as client:
        started = await client.call_tool("start_story", {"story": tomllib.loads(EDIT_CHAIN)})
        assert not started.is_error, started.content
        uri = str((started.structured_content or {})["resource_uri"])
        await client.subscribe_resource(uri)
        await eventually(lambda: any(entry.get("uri") == uri for entry in heard.logs), timeout=60)
    assert uri in heard.updates
    [ended_line] = [entry for entry in heard.logs if entry.get("uri") == uri]
    assert "is ready" in ended_line["message"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('type = "std-text-to-video"\n[[shots]]\nid = "../../etc"\nprompt = "x"\n', "`shots.0.id`"),
        ('type = "std-text-to-video"\n[[shots]]\nid = "a/b"\nprompt = "x"\n', "`shots.0.id`"),
        ('[[shots]]\nid = "a"\nprompt = "<script>x</script>"\nimage = "@b.last_frame"\n', "no shot `b`"),
        ('[[shots]]\nid = "a"\nprompt = "x"\nvideo = "file:///etc/passwd"\n', "`video`"),
        ("\x00\xff not toml", "not valid TOML"),
        ('title = 5\n[[shots]]\nid = "a"\n', "`title`"),
    ],
)
def test_a_hostile_story_file_is_refused_with_every_problem_named(text, expected):
    with pytest.raises(RequestValidationError) as refused:
        plan(Story.from_text(text.encode("latin-1")))
    assert expected in str(refused.value), str(refused.value)


async def test_a_story_goes_on_after_its_store_was_locked(tmp_path, caplog):
    from .support import locked

    db = tmp_path / "tasks.db"
    settings = Settings.load(
        store={"url": f"sqlite:///{db}", "busy_timeout_seconds": 0.2},
        sandbox={"finish_seconds": 0.5},
        poller={"media_dir": str(tmp_path / "media"), "rate_limit_per_second": 100},
    )
    async with KlingService.open(settings, sandbox=True) as service, following(service):
        started = await service.start_story(Story.from_text(EDIT_CHAIN))
        await eventually(lambda: _shot_running(service, started.story_id), timeout=30)
        with locked(db):  # another process holds the file: every sweep (stories too) fails for a while
            await asyncio.sleep(2.0)
        record = await ended(service, started.story_id)
    assert record.state is StoryState.SUCCEEDED, record.note
    assert "Task exception was never retrieved" not in caplog.text


async def _shot_running(service: KlingService, story_id: str) -> bool:
    record = await service.stories.get(story_id)
    return record is not None and any(shot.state is ShotState.RUNNING for shot in record.shots.values())


@pytest.mark.parametrize(
    ("content", "size", "expected"),
    [
        (b"x" * 10, 100_000, "a story file is at most 65536"),  # what Discord says the file weighs
        (b"\xff\xfe not toml", 12, "not valid TOML"),
        (b'[[shots]]\nid = "a"\nprompt = "x"\nimage = "@nowhere.last_frame"\n', 60, "no shot `nowhere`"),
    ],
)
async def test_a_bad_story_file_on_discord_is_refused_privately_and_spends_nothing(
    monkeypatch, tmp_path, content, size, expected
):
    from harness import fake_discord as fd

    from .support import ALICE, deliver, fake_discord, followups, running_bot, texts

    settings = Settings.load(store={"url": f"sqlite:///{tmp_path / 'bot.db'}"}, discord={"cooldown_seconds": 0})
    async with fake_discord(monkeypatch) as fake, running_bot(settings, sandbox=True) as bot:
        story = fake.host("story.toml", content, "text/plain")
        story["size"] = size
        command = fd.slash("story", ALICE, attachments={"file": story})
        deliver(bot, command)
        await eventually(lambda: bool(followups(fake, command)))
        stories = await bot.service.stories.recent()
    assert expected in texts(followups(fake, command)) and "nothing was spent" in texts(followups(fake, command))
    assert fake.channel_posts() == [] and stories == []
