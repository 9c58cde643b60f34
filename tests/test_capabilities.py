"""Kling's own capabilities (extend, lip-sync, motion control, characters, native multi-shot) from Python, the
CLI, MCP and Discord, on the sandbox in Kling's format; checked before anything is spent, reserved by the ledger
under bursts; and refused, with nothing sent, on a provider that does not offer them."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from harness.helpers import eventually
from kling3_tools import KlingService, Settings
from kling3_tools.adapters.providers import Credentials, Kling
from kling3_tools.domain import errors
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import LOCAL_OWNER, DiscordOrigin, TaskRecord
from kling3_tools.domain.story import Story
from kling3_tools.workflows.schedule import SchedulePolicy

from .conftest import stats

QUICK = SchedulePolicy(prior_window=(0.2, 1.0), dense_interval=0.1, max_interval=0.3)
IMAGE, SIDE, MOTION = "https://example.com/front.jpg", "https://example.com/side.jpg", "https://example.com/m.mp4"


def kling_settings(sandbox: Any, db: Path, **extra: Any) -> Settings:
    options = sandbox.state.options
    return Settings.load(
        provider="kling",
        base_url=sandbox.url,
        access_key=options.access_key,
        secret_key=options.secret_key,
        store={"url": f"sqlite:///{db}"},
        poller={"rate_limit_per_second": 100, "lease_seconds": 2, "expected_seconds": (0.2, 1.0)},
        **extra,
    )


def aggregator_settings(sandbox: Any, db: Path) -> Settings:
    return Settings.load(api_key=sandbox.api_key, base_url=sandbox.url, store={"url": f"sqlite:///{db}"})


def sent(sandbox: Any, endpoint: str = "generate") -> int:
    return int(stats(sandbox)["requests"].get(endpoint, 0))


async def finished(service: KlingService, **fields: Any) -> TaskRecord:
    """A video made and followed to its end in this process."""
    record = await service.make({"type": "o3-std-text-to-video", "prompt": "a fox in the snow", **fields})
    await service.wait(record.task_id, timeout=30)
    found = await service.get(record.task_id)
    assert found is not None and found.outcome == "succeeded"
    return found


def wire(request: GenerateRequest) -> dict[str, Any]:
    """The body Kling's format sends for `request`."""
    body = Kling(Credentials(api_key=SecretStr("k"))).generate(request).json
    assert body is not None
    return body


# --- Python -------------------------------------------------------------------------------------------


async def test_extend_makes_the_next_shot_of_a_video_linked_to_it(sandbox, tmp_path):
    async with KlingService.open(kling_settings(sandbox, tmp_path / "t.db"), schedule=QUICK) as service:
        parent = await finished(service, duration=4)
        child = await service.extend(parent.task_id, "the fox leaps over a log", duration=6)
        assert child.source_task == parent.task_id and child.type == "o3-std-video-extend"
        assert child.request["video"] == parent.video_url
        assert child.estimated_credits == Kling.PRICES["o3-std-video-extend"].credits(6, False)
        done = await service.wait(child.task_id, timeout=30)
        listed = await service.recent(limit=5)
    assert done.status == "succeeded"
    assert [r.source_task for r in listed][:2] == [parent.task_id, None]
    body = wire(GenerateRequest.build(**child.request))
    assert body["video_list"] == [{"video_url": parent.video_url, "refer_type": "feature", "keep_original_sound": "no"}]
    assert body["prompt"] == "Based on <<<video_1>>>, generate the next shot: the fox leaps over a log"
    assert (body["duration"], body["sound"]) == ("6", "off")


async def test_lip_sync_says_a_text_or_an_audio_track_and_costs_the_source_videos_length(sandbox, tmp_path):
    async with KlingService.open(kling_settings(sandbox, tmp_path / "t.db"), schedule=QUICK) as service:
        parent = await finished(service, duration=7)
        spoken = await service.lip_sync(parent.task_id, text="Hello there", voice="uk_man2")
        dubbed = await service.lip_sync(parent.task_id, audio="https://example.com/hello.mp3")
        assert (spoken.duration, dubbed.duration) == (7, 7)  # the source's length, which Kling bills
        assert spoken.estimated_credits == Kling.PRICES["lip-sync"].credits(7, False)
        assert (await service.wait(spoken.task_id, timeout=30)).status == "succeeded"
        before = sent(sandbox)
        for wrong, problem in [
            ({}, "either `text`"),
            ({"text": "hi", "audio": "https://example.com/a.mp3"}, "either `text`"),
            ({"audio": "https://example.com/a.mp3", "voice": "x"}, "does not go with `audio`"),
            ({"text": "x" * 121}, "at most 120 characters"),
        ]:
            with pytest.raises(errors.RequestValidationError, match=problem):
                await service.lip_sync(parent.task_id, **wrong)
        assert sent(sandbox) == before
    assert wire(GenerateRequest.build(**spoken.request)) == {
        "input": {
            "video_url": parent.video_url,
            "mode": "text2video",
            "text": "Hello there",
            "voice_id": "uk_man2",
            "voice_language": "en",
            "voice_speed": 1.0,
        }
    }
    assert wire(GenerateRequest.build(**dubbed.request))["input"] == {
        "video_url": parent.video_url,
        "mode": "audio2video",
        "audio_type": "url",
        "audio_url": "https://example.com/hello.mp3",
    }


async def test_a_source_that_cannot_be_built_on_is_refused_before_anything_is_sent(sandbox, tmp_path):
    async with KlingService.open(kling_settings(sandbox, tmp_path / "t.db"), schedule=QUICK) as service:
        long = await finished(service, duration=12)
        running = await service.make({"type": "o3-std-text-to-video", "prompt": "a slow fox"})
        theirs = await service.make(
            {"type": "o3-std-text-to-video", "prompt": "bob's fox"},
            DiscordOrigin(guild_id=1, channel_id=2, user_id=2),
        )
        await service.wait(theirs.task_id, timeout=30)
        before = sent(sandbox)
        cases = [
            (service.lip_sync(long.task_id, text="hi"), "lasts 12 s; lip-sync takes at most 10 s"),
            (service.extend(long.task_id, "more"), "takes at most 10 s"),
            (service.extend(running.task_id, "more"), "has not made a video"),
            (service.extend("n75nosuchtask", "more"), "is not one of your videos"),
            (service.extend("../../etc/passwd", "more"), "source_task"),
            (
                service.extend(theirs.task_id, "more", origin=DiscordOrigin(guild_id=1, channel_id=2, user_id=1)),
                "is not one of your videos",
            ),
        ]
        for attempt, problem in cases:
            with pytest.raises(errors.RequestValidationError, match=problem):
                await attempt
        assert sent(sandbox) == before
        assert await service.store.attempts() == []  # nothing reserved either


async def test_motion_control_moves_an_image_as_a_video_moves(sandbox, tmp_path):
    fields = {"type": "pro-motion-control", "image": IMAGE, "video": MOTION}
    async with KlingService.open(kling_settings(sandbox, tmp_path / "t.db"), schedule=QUICK) as service:
        for wrong, problem in [
            ({}, "requires `duration`"),
            ({"duration": 12}, "at most 10 s"),
            ({"duration": 5, "cfg_scale": 0.5}, "does not take `cfg_scale`"),
        ]:
            with pytest.raises(errors.RequestValidationError, match=problem):
                await service.make(fields | wrong)
        assert sent(sandbox) == 0
        record = await service.make(fields | {"duration": 12, "character_orientation": "video", "prompt": "dance"})
        assert (await service.wait(record.task_id, timeout=30)).status == "succeeded"
    assert record.estimated_credits == Kling.PRICES["pro-motion-control"].credits(12, False)
    assert wire(GenerateRequest.build(**record.request)) == {
        "model_name": "kling-v3",
        "mode": "pro",
        "image_url": IMAGE,
        "video_url": MOTION,
        "character_orientation": "video",
        "keep_original_sound": "yes",
        "prompt": "dance",
    }


async def test_characters_are_made_kept_per_owner_placed_by_name_and_deleted(sandbox, tmp_path):
    alice = DiscordOrigin(guild_id=1, channel_id=2, user_id=1)
    async with KlingService.open(kling_settings(sandbox, tmp_path / "t.db"), schedule=QUICK) as service:
        characters = service.characters
        mira = await characters.create(LOCAL_OWNER, "Mira", [IMAGE, SIDE], "a red fox", check_every=0.05)
        assert mira.provider == "kling" and mira.provider_id.isdigit()
        for name, images, problem in [
            ("Mira", [IMAGE, SIDE], "already"),  # one name per owner
            ("<b>Mira</b>", [IMAGE, SIDE], "name"),
            ("Solo", [IMAGE], "images"),
            ("Crowd", [IMAGE] * 5, "images"),
            ("Far", [IMAGE, "file:///etc/passwd"], "images\\[1\\]"),
        ]:
            with pytest.raises(errors.RequestValidationError, match=problem):
                await characters.create(LOCAL_OWNER, name, images)
        assert sent(sandbox, "character") == 1
        record = await service.make({"type": "o3-pro-text-to-video", "prompt": "Mira runs", "characters": ["mira"]})
        assert record.request["characters"] == [mira.provider_id]
        body = wire(GenerateRequest.build(**record.request))
        assert body["element_list"] == [{"element_id": int(mira.provider_id)}]
        assert body["prompt"] == "Mira runs (<<<element_1>>>)"
        with pytest.raises(errors.RequestValidationError, match="no character named 'Mira'"):
            await service.make({"type": "o3-pro-text-to-video", "prompt": "x", "characters": ["Mira"]}, alice)
        with pytest.raises(
            errors.RequestValidationError, match="only O3 image-to-video, reference-to-video and text-to-video types"
        ):
            await service.make({"type": "pro-text-to-video", "prompt": "x", "characters": ["Mira"]})
        assert [c.name for c in await characters.of(LOCAL_OWNER)] == ["Mira"]
        assert await characters.of("discord:1") == []
        await characters.delete(LOCAL_OWNER, "Mira")
        assert await characters.of(LOCAL_OWNER) == []
        assert sent(sandbox, "character") == 2  # deleted at Kling too


def test_a_character_answer_that_names_no_usable_id_names_none():
    calls = Kling(Credentials(api_key=SecretStr("k"))).character_calls()

    def answer(element_id: Any) -> httpx.Response:
        data = {"task_id": 7, "task_status": "succeed", "task_result": {"elements": [{"element_id": element_id}]}}
        return httpx.Response(200, json={"code": 0, "message": "SUCCEED", "data": data})

    assert calls.read(answer(123456)).provider_id == "123456"
    for lie in ["../../x", "1 OR 1=1", None, {"id": 1}, ""]:
        assert calls.read(answer(lie)).provider_id is None, lie
    failed = httpx.Response(
        200, json={"code": 0, "data": {"task_id": "9", "task_status": "failed", "task_status_msg": "no face"}}
    )
    assert (calls.read(failed).status, calls.read(failed).error_message) == ("failed", "no face")


async def test_native_multi_shot_is_one_request_priced_by_its_whole_length(sandbox, tmp_path):
    shots = ["3:a fox wakes", {"prompt": "it stretches", "duration": 2}, "4:it runs into the snow"]
    async with KlingService.open(kling_settings(sandbox, tmp_path / "t.db"), schedule=QUICK) as service:
        for wrong, problem in [
            ({"shots": ["3:alone"]}, "at least 2"),
            ({"shots": ["8:a", "8:b"]}, "16 s in all"),
            ({"shots": shots, "duration": 5}, "add up to 9 s"),
            ({"shots": ["a fox"] * 2}, "SECONDS:PROMPT"),
            ({"type": "pro-image-to-video", "image": IMAGE, "end_image": SIDE, "shots": shots}, "end_image"),
            ({"type": "o3-pro-reference-to-video", "images": [IMAGE], "shots": shots}, "does not take `shots`"),
        ]:
            with pytest.raises(errors.RequestValidationError, match=problem):
                await service.make({"type": "pro-text-to-video"} | wrong)
        record = await service.make({"type": "pro-text-to-video", "shots": shots})
        assert (await service.wait(record.task_id, timeout=30)).status == "succeeded"
    assert sent(sandbox) == 1
    assert record.duration == 9 and record.estimated_credits == Kling.PRICES["pro-text-to-video"].credits(9, True)
    body = wire(GenerateRequest.build(**record.request))
    assert (body["multi_shot"], body["shot_type"], body["duration"]) == (True, "customize", "9")
    assert body["multi_prompt"] == [
        {"index": 1, "prompt": "a fox wakes", "duration": "3"},
        {"index": 2, "prompt": "it stretches", "duration": "2"},
        {"index": 3, "prompt": "it runs into the snow", "duration": "4"},
    ]


def test_a_native_story_gathers_its_shots_into_requests_within_the_models_limits():
    shots = [{"id": f"s{n}", "prompt": f"shot {n}", "duration": 2} for n in range(1, 9)]
    story = Story.from_mapping({"mode": "native", "type": "pro-text-to-video", "shots": shots})
    assert [s.id for s in story.shots] == ["s1", "s7"]  # six shots (12 s), then the last two
    assert [len(s.fields["shots"]) for s in story.shots] == [6, 2]
    longer = Story.from_mapping(
        {"mode": "native", "shots": [{"id": "a", "prompt": "a", "duration": 10}, {"id": "b", "prompt": "b"}]}
    )
    assert [s.fields for s in longer.shots] == [
        {"shots": [{"prompt": "a", "duration": 10}, {"prompt": "b", "duration": 3}]}
    ]
    with pytest.raises(errors.RequestValidationError) as refused:
        Story.from_mapping(
            {"mode": "native", "shots": [{"id": "a", "prompt": "a", "image": "@b.last_frame"}], "cut": {"shots": ["a"]}}
        )
    assert refused.value.problems == [
        "shot `a`: a native shot takes only `prompt` and `duration`",
        "[cut] shots: a native story's film is its shots in order; leave it out",
    ]


async def test_a_native_story_runs_as_one_request_on_kling(sandbox, tmp_path):
    pytest.importorskip("av")
    shots = [{"id": "wake", "prompt": "a fox wakes", "duration": 3}, {"id": "run", "prompt": "it runs", "duration": 4}]
    story = Story.from_mapping({"title": "Morning", "mode": "native", "type": "pro-text-to-video", "shots": shots})
    async with KlingService.open(kling_settings(sandbox, tmp_path / "t.db"), schedule=QUICK) as service:
        record = await service.start_story(story, film_path=tmp_path / "film.mp4")
        assert record.credits == Kling.PRICES["pro-text-to-video"].credits(7, True)
        poller = service.poller()
        running = asyncio.create_task(poller.run())
        try:
            await eventually(lambda: (tmp_path / "film.mp4").exists(), timeout=60)
        finally:
            poller.stop()
            await running
    assert sent(sandbox) == 1


async def test_what_the_aggregator_lacks_is_refused_with_nothing_sent(sandbox, tmp_path):
    settings = aggregator_settings(sandbox, tmp_path / "t.db")
    async with KlingService.open(settings, schedule=QUICK) as service:
        parent = await finished(service, duration=5)
        before = sent(sandbox)
        attempts = [
            service.extend(parent.task_id, "more"),
            service.lip_sync(parent.task_id, text="hi"),
            service.make({"type": "std-motion-control", "image": IMAGE, "video": MOTION, "duration": 5}),
            service.make({"type": "o3-std-text-to-video", "shots": ["3:a", "3:b"]}),
            service.characters.create(LOCAL_OWNER, "Mira", [IMAGE, SIDE]),
            service.start_story(
                Story.from_mapping(
                    {
                        "mode": "native",
                        "type": "pro-text-to-video",
                        "shots": [{"id": "a", "prompt": "a"}, {"id": "b", "prompt": "b"}],
                    }
                )
            ),
        ]
        for attempt in attempts:
            with pytest.raises(errors.RequestValidationError, match=r'provider = "kling"|configured provider'):
                await attempt
        assert await service.store.attempts() == []
    assert sent(sandbox) == before and sent(sandbox, "character") == 0


@pytest.mark.parametrize("how", ["extend", "lip_sync"])
async def test_a_burst_of_ten_against_a_budget_for_two_reaches_the_api_twice(sandbox, tmp_path, how):
    price = Kling.PRICES["o3-std-video-extend" if how == "extend" else "lip-sync"].credits(5, False)
    parent_price = Kling.PRICES["o3-std-text-to-video"].credits(5, True)
    settings = kling_settings(sandbox, tmp_path / "t.db", budget={"daily_credits": parent_price + 2 * price})
    async with KlingService.open(settings, schedule=QUICK) as service:
        parent = await finished(service, duration=5)
        before = sent(sandbox)

        async def one() -> TaskRecord:
            if how == "extend":
                return await service.extend(parent.task_id, "more")
            return await service.lip_sync(parent.task_id, text="hi")

        results = await asyncio.gather(*(one() for _ in range(10)), return_exceptions=True)
    made = [r for r in results if isinstance(r, TaskRecord)]
    refused = [r for r in results if isinstance(r, errors.SpendingRefusedError)]
    assert (len(made), len(refused)) == (2, 8), results
    assert sent(sandbox) - before == 2


# --- the CLI ------------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from kling3_tools.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def use_kling(monkeypatch: pytest.MonkeyPatch, sandbox: Any, tmp_path: Path) -> None:
    options = sandbox.state.options
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in {
        "PROVIDER": "kling",
        "BASE_URL": sandbox.url,
        "ACCESS_KEY": options.access_key,
        "SECRET_KEY": options.secret_key,
        "STORE__URL": f"sqlite:///{tmp_path / 'cli.db'}",
    }.items():
        monkeypatch.setenv(f"KLING_{name}", value)


def test_the_cli_extends_lip_syncs_moves_shoots_and_keeps_characters(sandbox, tmp_path, monkeypatch, capsys):
    use_kling(monkeypatch, sandbox, tmp_path)
    code, out, err = cli(capsys, "generate", "-t", "o3-std-text-to-video", "a fox", "--wait", "--json")
    assert code == 0, err
    parent = json.loads(out)["task_id"]
    assert cli(capsys, "character", "create", "Mira", "--image", IMAGE, "--image", SIDE)[0] == 0
    code, out, _ = cli(capsys, "character", "list", "--json")
    [mira] = json.loads(out)["characters"]
    code, out, err = cli(capsys, "generate", "-t", "o3-std-text-to-video", "Mira runs", "--character", "Mira", "--json")
    assert code == 0, err
    assert json.loads(out)["request"]["characters"] == [mira["provider_id"]]

    code, out, err = cli(capsys, "extend", parent, "she leaps", "-d", "4", "--wait", "--json")
    assert code == 0 and json.loads(out)["status"] == "succeeded", err
    assert f"Cost: {Kling.PRICES['o3-std-video-extend'].credits(4, False)} units" in err
    code, out, err = cli(capsys, "lipsync", parent, "--text", "Hello", "--voice", "uk_man2", "--json")
    assert code == 0, err
    spoken = json.loads(out)
    assert (spoken["type"], spoken["request"]["source_task"], spoken["request"]["text"]) == (
        "lip-sync",
        parent,
        "Hello",
    )
    with pytest.raises(SystemExit) as usage:  # --text or --audio, says argparse
        cli(capsys, "lipsync", parent)
    assert usage.value.code == 2 and "one of the arguments --text --audio is required" in capsys.readouterr().err
    code, out, err = cli(capsys, "generate", "-t", "pro-motion-control", "--image", IMAGE, "--video", MOTION, "-d", "5",
                         "--character-orientation", "image", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["type"] == "pro-motion-control", err
    code, out, err = cli(capsys, "generate", "--shot", "3:a fox wakes", "--shot", "4:it runs", "--json")
    assert code == 0 and json.loads(out)["duration"] == 7, err
    code, out, _ = cli(capsys, "tasks")
    assert f"o3-std-video-extend of {parent}" in out and f"lip-sync of {parent}" in out

    assert cli(capsys, "character", "delete", "Mira")[0] == 0
    assert json.loads(cli(capsys, "character", "list", "--json")[1]) == {"characters": []}
    code, _, err = cli(capsys, "character", "delete", "Mira")
    assert code == 2 and "no character named 'Mira'" in err and "Traceback" not in err

    before = sent(sandbox)
    monkeypatch.setenv("KLING_PROVIDER", "kling3api")
    monkeypatch.setenv("KLING_API_KEY", sandbox.api_key)
    for argv in (
        ["extend", parent, "more"],
        ["lipsync", parent, "--text", "hi"],
        ["generate", "--shot", "3:a", "--shot", "3:b"],
        ["character", "create", "Mira", "--image", IMAGE, "--image", SIDE],
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and 'provider = "kling"' in err and "Traceback" not in err, (argv, err)
    assert sent(sandbox) == before and sent(sandbox, "character") == 2


# --- MCP ------------------------------------------------------------------------------------------------


async def test_mcp_extends_lip_syncs_and_keeps_characters(sandbox, tmp_path):
    from mcp import Client

    from kling3_tools.mcp.serve import loaded_server

    from .support import text

    settings = kling_settings(sandbox, tmp_path / "mcp.db")
    async with loaded_server(settings, sandbox=False) as server, Client(server) as client:
        made = await client.call_tool(
            "generate_video", {"type": "o3-std-text-to-video", "prompt": "a fox", "wait_seconds": 0}
        )
        parent = made.structured_content["task_id"]
        await finished_over_mcp(client, parent)
        mira = await client.call_tool("create_character", {"name": "Mira", "images": [IMAGE, SIDE]})
        assert not mira.is_error, text(mira)
        listed = await client.call_tool("list_characters", {})
        assert [c["name"] for c in listed.structured_content["characters"]] == ["Mira"]
        placed = await client.call_tool(
            "generate_video",
            {"type": "o3-pro-text-to-video", "prompt": "Mira runs", "characters": ["Mira"], "wait_seconds": 0},
        )
        placed_id = placed.structured_content["task_id"]
        extended = await client.call_tool("extend_video", {"task_id": parent, "prompt": "she leaps", "wait_seconds": 0})
        assert extended.structured_content["source_task"] == parent, text(extended)
        await finished_over_mcp(client, extended.structured_content["task_id"])
        spoken = await client.call_tool("lip_sync", {"task_id": parent, "text": "Hello", "wait_seconds": 0})
        assert spoken.structured_content["type"] == "lip-sync", text(spoken)
        neither = await client.call_tool("lip_sync", {"task_id": parent, "wait_seconds": 0})
        assert neither.is_error and "either `text`" in text(neither) and "Nothing was spent" in text(neither)
        unknown = await client.call_tool("extend_video", {"task_id": "n75nothere", "prompt": "x"})
        assert unknown.is_error and "not one of your videos" in text(unknown)
        moved = await client.call_tool(
            "generate_video",
            {"type": "std-motion-control", "image": IMAGE, "video": MOTION, "duration": 6, "wait_seconds": 0},
        )
        assert moved.structured_content["estimated_credits"] == Kling.PRICES["std-motion-control"].credits(6, False)
        shot = await client.call_tool(
            "generate_video",
            {"type": "pro-text-to-video", "shots": [{"prompt": "a", "duration": 3}, "4:b"], "wait_seconds": 0},
        )
        assert shot.structured_content["estimated_credits"] == Kling.PRICES["pro-text-to-video"].credits(7, True)
        gone = await client.call_tool("delete_character", {"name": "Mira"})
        assert gone.structured_content == {"characters": []}
    requests = sent(sandbox)

    async with KlingService.open(settings) as service:
        record = await service.get(placed_id)
    assert record is not None and record.request["characters"] == [mira.structured_content["provider_id"]]
    aggregator = aggregator_settings(sandbox, tmp_path / "mcp.db")
    async with loaded_server(aggregator, sandbox=False) as server, Client(server) as client:
        for tool, arguments in [
            ("extend_video", {"task_id": parent, "prompt": "more"}),
            ("lip_sync", {"task_id": parent, "text": "hi"}),
            ("create_character", {"name": "Mira", "images": [IMAGE, SIDE]}),
            ("generate_video", {"type": "pro-text-to-video", "shots": ["3:a", "3:b"]}),
        ]:
            refused = await client.call_tool(tool, arguments)
            assert refused.is_error and 'provider = "kling"' in text(refused), (tool, text(refused))
    assert sent(sandbox) == requests and sent(sandbox, "character") == 2


async def finished_over_mcp(client: Any, task_id: str) -> None:
    async def done() -> bool:
        status = await client.call_tool("get_video_status", {"task_id": task_id})
        return status.structured_content["status"] == "succeeded"

    await eventually(done)


# --- Discord -------------------------------------------------------------------------------------------


def png(side: int = 400) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def interaction_answers(fake: Any, payload: dict[str, Any]) -> list[Any]:
    return fake.find("POST", f"/interactions/{payload['id']}/")


async def discord_records(bot: Any, count: int) -> list[TaskRecord]:
    async def enough() -> bool:
        return len(await bot.service.store.recent(origin_kind="discord")) >= count

    await eventually(enough)
    return await bot.service.store.recent(origin_kind="discord")


async def test_discord_extends_and_lip_syncs_from_buttons_and_makes_characters(fake, sandbox, tmp_path):
    pytest.importorskip("discord")
    from harness import fake_discord as fd
    from kling3_tools.adapters.sandbox.app import SAMPLE_VIDEO

    from .support import ALICE, BOB, deliver, followups, running_bot, texts

    settings = kling_settings(sandbox, tmp_path / "bot.db", discord={"cooldown_seconds": 0})
    async with running_bot(settings) as bot:
        deliver(bot, fd.slash("generate", ALICE, prompt="A fox says hello", model="o3-std-text-to-video"))
        await eventually(lambda: any("ready" in str(c.body) for c in fake.channel_posts()))
        [ready] = [c for c in fake.channel_posts() if "ready" in str(c.body)]
        buttons = {b["label"]: b["custom_id"] for row in ready.body["components"] for b in row["components"]}
        assert set(buttons) == {"Re-roll", "Edit", "Extend", "Lip-sync"}
        [parent] = await discord_records(bot, 1)

        intruder = fd.button(buttons["Extend"], BOB, ready.answer)
        deliver(bot, intruder)
        await eventually(lambda: bool(interaction_answers(fake, intruder)))
        assert "Only the person" in str(interaction_answers(fake, intruder)[0].body)

        for label, said in (("Extend", "She leaps over a log"), ("Lip-sync", "Hello there")):
            click = fd.button(buttons[label], ALICE, ready.answer)
            deliver(bot, click)
            await eventually(lambda click=click: bool(interaction_answers(fake, click)))
            [modal] = interaction_answers(fake, click)
            assert modal.body["type"] == 9
            field = modal.body["data"]["components"][0]["components"][0]["custom_id"]
            submit = fd.modal_submit(modal.body["data"]["custom_id"], ALICE, {field: said})
            deliver(bot, submit)
            await eventually(lambda submit=submit: "Started" in texts(followups(fake, submit)))
        extend, spoken = sorted((await discord_records(bot, 3))[:2], key=lambda r: r.type)[::-1]
        assert (lipped := spoken).type == "lip-sync" and lipped.request["text"] == "Hello there"
        assert extend.type == "o3-std-video-extend" and extend.source_task == parent.task_id

        front, side = fake.host("front.png", png(), "image/png"), fake.host("side.png", png(), "image/png")
        create = fd.slash("character create", ALICE, name="Mira", attachments={"front": front, "side": side})
        deliver(bot, create)
        await eventually(lambda: "Made **Mira**" in texts(followups(fake, create)))
        posted = fd.message(fd.CHANNEL_ID, "my cat", attachments=[front, side])
        menu = fd.message_menu("Use as character", ALICE, posted)
        deliver(bot, menu)
        await eventually(lambda: bool(interaction_answers(fake, menu)))
        [modal] = interaction_answers(fake, menu)
        name_field = modal.body["data"]["components"][0]["components"][0]["custom_id"]
        submit = fd.modal_submit(modal.body["data"]["custom_id"], ALICE, {name_field: "Tom"})
        deliver(bot, submit)
        await eventually(lambda: "Made **Tom**" in texts(followups(fake, submit)))
        assert [c.name for c in await bot.service.characters.of(f"discord:{ALICE}")] == ["Mira", "Tom"]
        assert await bot.service.characters.of(f"discord:{BOB}") == []

        shots = fd.slash(
            "generate", ALICE, prompt="Morning", model="pro-text-to-video", shots="3:A fox wakes; 4:It runs"
        )
        deliver(bot, shots)
        await eventually(lambda: "Started" in texts(followups(fake, shots)))
        motion = fd.slash(
            "motion", ALICE, duration=5,
            attachments={"image": front, "video": fake.host("dance.mp4", SAMPLE_VIDEO, "video/mp4")},
        )  # fmt: skip
        deliver(bot, motion)
        await eventually(lambda: "Started" in texts(followups(fake, motion)))
        records = await discord_records(bot, 5)
    assert records[0].type == "std-motion-control" and records[0].duration == 5
    assert records[1].request["shots"] == [
        {"prompt": "A fox wakes", "duration": 3},
        {"prompt": "It runs", "duration": 4},
    ]


async def test_a_video_discord_refuses_as_too_large_is_posted_as_a_link(fake, sandbox, tmp_path):
    pytest.importorskip("discord")
    from harness import fake_discord as fd

    from .support import ALICE, deliver, running_bot

    fake.refuse_files_over = 100  # smaller than any video: what a guild whose limit Discord misreports does
    async with running_bot(aggregator_bot_settings(sandbox, tmp_path)) as bot:
        deliver(bot, fd.slash("generate", ALICE, prompt="A fox", duration=3))
        await eventually(lambda: any("ready" in str(c.body) and not c.files for c in fake.channel_posts()))
        [record] = await bot.service.store.recent(origin_kind="discord")
    refused = [c for c in fake.channel_posts() if c.files]
    [posted] = [c for c in fake.channel_posts() if "ready" in str(c.body) and not c.files]
    assert refused and refused[0].answer["code"] == 40005  # it was tried as an attachment first
    assert record.video_url and record.video_url in posted.body["content"]
    buttons = {b["label"] for row in posted.body["components"] for b in row["components"]}
    assert buttons == {"Re-roll", "Edit"}  # the aggregator makes no extensions or lip-syncs


def aggregator_bot_settings(sandbox: Any, tmp_path: Path) -> Settings:
    return Settings.load(
        api_key=sandbox.api_key,
        base_url=sandbox.url,
        store={"url": f"sqlite:///{tmp_path / 'bot.db'}"},
        poller={"rate_limit_per_second": 100, "lease_seconds": 2},
        discord={"cooldown_seconds": 0},
    )


async def test_sqlite_keeps_characters_per_owner_and_name(tmp_path):
    await characters_kept(f"sqlite:///{tmp_path / 'c.db'}")


async def test_postgres_keeps_characters_per_owner_and_name(postgres_url):
    await characters_kept(postgres_url)


async def characters_kept(url: str) -> None:
    from kling3_tools.adapters.store import open_store
    from kling3_tools.domain.characters import Character

    store = await open_store(url)
    try:
        mira = Character(owner="local", name="Mira", provider="kling", provider_id="123", images=[IMAGE])
        assert await store.add_character(mira)
        assert not await store.add_character(mira.model_copy(update={"provider_id": "456"}))  # one name per owner
        assert await store.add_character(mira.model_copy(update={"owner": "discord:1"}))
        assert [c.provider_id for c in await store.characters("local")] == ["123"]
        assert (await store.characters("local", name="Mira"))[0].images == [IMAGE]
        assert await store.characters("local", name="'; DROP TABLE characters; --") == []
        assert await store.delete_character("local", "Mira")
        assert await store.characters("local") == [] and len(await store.characters("discord:1")) == 1
    finally:
        await store.close()


async def test_a_story_places_its_owners_characters_per_shot(sandbox, tmp_path):
    pytest.importorskip("av")
    async with KlingService.open(kling_settings(sandbox, tmp_path / "t.db"), schedule=QUICK) as service:
        mira = await service.characters.create(LOCAL_OWNER, "Mira", [IMAGE, SIDE], check_every=0.05)
        shots = [{"id": "a", "prompt": "Mira sleeps", "characters": ["Mira"]}, {"id": "b", "prompt": "a field"}]
        story = {"type": "o3-std-text-to-video", "shots": shots}
        strangers = {**story, "shots": [shots[0], {**shots[1], "characters": ["Tom"]}]}
        with pytest.raises(
            errors.RequestValidationError, match="shot `b`: `characters`: you have no character named 'Tom'"
        ):
            await service.start_story(Story.from_mapping(strangers))
        with pytest.raises(errors.RequestValidationError, match="no character named 'Mira'"):  # not Bob's
            await service.start_story(Story.from_mapping(story), DiscordOrigin(guild_id=1, channel_id=2, user_id=2))
        assert await service.store.attempts() == []
        record = await service.start_story(Story.from_mapping(story))
    assert record.story.shots[0].fields["characters"] == [mira.provider_id]
    assert "characters" not in record.story.shots[1].fields


async def test_what_only_this_machine_knows_is_found_before_anything_is_reserved(sandbox, tmp_path):
    """A source task named in a story, or in a request built by hand, never reaches the API unfound; a lip-sync
    is billed by its source's real length; a character's name is one name in any case."""
    async with KlingService.open(kling_settings(sandbox, tmp_path / "t.db"), schedule=QUICK) as service:
        parent = await finished(service, duration=8)
        before = sent(sandbox)
        with pytest.raises(errors.RequestValidationError, match="was not looked up"):
            await service.submit(GenerateRequest.build(type="o3-std-video-extend", prompt="x", source_task="abc"))
        with pytest.raises(errors.RequestValidationError, match="lasts 8 s, which is what a lip-sync of it is billed"):
            await service.make({"type": "lip-sync", "source_task": parent.task_id, "text": "hi", "duration": 3})
        story = {"type": "o3-std-video-extend", "shots": [{"id": "a", "prompt": "on", "source_task": "n75nothere"}]}
        with pytest.raises(errors.RequestValidationError, match="shot `a`: `source_task`: 'n75nothere' is not one"):
            await service.start_story(Story.from_mapping(story))
        assert sent(sandbox) == before and await service.store.attempts() == []
        story["shots"][0]["source_task"] = parent.task_id  # type: ignore[index]
        record = await service.start_story(Story.from_mapping(story))
        assert record.story.shots[0].fields["video"] == parent.video_url

        await service.characters.create(LOCAL_OWNER, "Bob", [IMAGE, SIDE], check_every=0.05)
        with pytest.raises(errors.RequestValidationError, match="already"):
            await service.characters.create(LOCAL_OWNER, "bob", [IMAGE, SIDE], check_every=0.05)
        assert sent(sandbox, "character") == 1


def test_limits_hold_on_every_path_and_a_bad_native_duration_is_one_line():
    for fields, problem in [
        ({"type": "lip-sync", "video": MOTION, "duration": 15, "text": "hi"}, "at most 10 s"),
        ({"type": "o3-pro-reference-to-video", "prompt": "x", "images": [IMAGE] * 5, "video": MOTION}, "at most 4"),
    ]:
        with pytest.raises(errors.RequestValidationError, match=problem):
            GenerateRequest.build(**fields)
    shots = [{"id": "a", "prompt": "x", "duration": "3"}, {"id": "b", "prompt": "y", "duration": 0}]
    with pytest.raises(errors.RequestValidationError) as refused:
        Story.from_mapping({"mode": "native", "type": "pro-text-to-video", "shots": shots})
    assert refused.value.problems == [
        "shot `a`: `duration` must be whole seconds, 1-15 (got '3')",
        "shot `b`: `duration` must be whole seconds, 1-15 (got 0)",
    ]
    request = GenerateRequest.build(type="o3-pro-text-to-video", shots=["3:Mira wakes", "3:<<<element_1>>> runs"],
                                    characters=["123"])  # fmt: skip
    assert [shot["prompt"] for shot in wire(request)["multi_prompt"]] == [
        "Mira wakes (<<<element_1>>>)",
        "<<<element_1>>> runs",
    ]


@pytest.mark.process
def test_a_video_made_on_the_embedded_sandbox_is_extended_by_the_next_command(tmp_path):
    """Each `--sandbox` command starts its own sandbox on a new port; the source task's video is found at this
    command's (the record's URL made reachable), as any other of its tasks' is."""
    from harness.helpers import kling3

    home = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "KLING_SANDBOX__FINISH_SECONDS": "0.5"}
    sandbox = ["--provider", "kling", "--sandbox"]
    made = kling3(*sandbox, "generate", "-t", "o3-std-text-to-video", "a fox", "--wait", "--json", **home)
    assert made.returncode == 0, made.stderr
    parent = json.loads(made.stdout)["task_id"]
    extended = kling3(*sandbox, "extend", parent, "it leaps", "--wait", "--json", **home)
    assert extended.returncode == 0, extended.stderr
    assert json.loads(extended.stdout)["status"] == "succeeded"
