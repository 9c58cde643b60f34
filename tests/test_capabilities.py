"""Kling's own capabilities (extend, lip-sync, motion control, characters, native multi-shot) from Python, the
CLI, MCP and Discord, on the sandbox in Kling's format; checked before anything is spent, reserved by the ledger
under bursts; and refused, with nothing sent, on a provider that does not offer them."""

from __future__ import annotations

import asyncio
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
        poller={"rate_limit_per_second": 100, "lease_seconds": 2},
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
