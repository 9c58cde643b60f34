"""Stories: planned before anything is spent (every problem at once, references, cycles, order, price), and
their media: stills and the film, decoded back to check frames, pixels and durations."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness.helpers import kling3
from kling3_tools.adapters.sandbox.app import SAMPLE_VIDEO
from kling3_tools.domain.errors import RequestValidationError
from kling3_tools.domain.rules import quote
from kling3_tools.domain.story import Story
from kling3_tools.domain.story_plan import plan

from .conftest import stats
from .support import LIGHTHOUSE

av = pytest.importorskip("av")
media = pytest.importorskip("kling3_tools.workflows.stories.media")


def story_file(tmp_path: Path, text: str = LIGHTHOUSE) -> Path:
    path = tmp_path / "story.toml"
    path.write_text(text)
    return path


def test_the_plan_orders_the_shots_and_prices_the_whole(tmp_path):
    story_plan = plan(Story.from_toml(story_file(tmp_path)))
    assert story_plan.stages == [["storm"], ["snow"], ["ship"]]
    assert story_plan.credits("storm") == quote("o3-pro-text-to-video", 5, None)
    assert story_plan.credits("snow") == quote("o3-pro-video-edit")
    assert story_plan.total == sum(story_plan.credits(shot) for shot in ("storm", "snow", "ship"))
    assert story_plan.requests["snow"].aspect_ratio is None  # a default reaches only the types that take it
    assert story_plan.requests["ship"].aspect_ratio is not None
    assert story_plan.story.film == ["storm", "snow", "ship"]


def test_independent_shots_share_a_stage():
    story = Story.from_mapping(
        {
            "type": "std-text-to-video",
            "shots": [
                {"id": "a", "prompt": "a"},
                {"id": "b", "prompt": "b"},
                {
                    "id": "c",
                    "type": "o3-std-reference-to-video",
                    "prompt": "c",
                    "images": ["@a.last_frame"],
                    "video": "@b",
                },
            ],
            "cut": {"shots": ["c", "a"], "transition": "crossfade"},
        }
    )
    story_plan = plan(story)
    assert story_plan.stages == [["a", "b"], ["c"]]
    assert story_plan.dependencies("c") == {"a", "b"}
    assert story_plan.story.film == ["c", "a"]


def test_the_plan_refuses_every_problem_at_once():
    story = Story.from_mapping(
        {
            "type": "std-text-to-video",
            "shots": [
                {"id": "a", "prompt": "a", "image": "@b.last_frame", "type": "std-image-to-video"},
                {"id": "b", "prompt": "b", "image": "@a.first_frame", "type": "std-image-to-video"},
                {"id": "c", "prompt": "c", "duration": 99},
                {"id": "d", "type": "o3-std-video-edit", "prompt": "d", "video": "@nobody"},
                {"id": "e", "type": "std-image-to-video", "prompt": "e", "image": "@c"},
                {"id": "f", "type": "o3-std-video-edit", "prompt": "f", "video": "@c.last_frame"},
            ],
            "cut": {"shots": ["a", "zz"]},
        }
    )
    with pytest.raises(RequestValidationError) as refused:
        plan(story)
    problems = "\n".join(refused.value.problems)
    assert "`a`, `b` depend on each other in a cycle" in problems
    assert "shot `c`: `duration` must be 3-15 seconds" in problems
    assert "there is no shot `nobody`" in problems
    assert "shot `e`: `image` needs an image; `@c` is a video" in problems
    assert "shot `f`: `video` needs a video; `@c.last_frame` is a still" in problems
    assert "[cut] names `zz`" in problems


def test_unknown_keys_and_bad_files_are_named():
    with pytest.raises(RequestValidationError) as refused:
        Story.from_mapping({"colour": "red", "shots": [{"id": "a", "prompt": "x", "speed": 2}]})
    assert "`colour` is neither a story key" in str(refused.value)
    assert "shot `a`: `speed` is not a request field" in str(refused.value)
    with pytest.raises(RequestValidationError, match="at least one"):
        Story.from_mapping({"title": "empty"})


@pytest.mark.process
def test_kling3_story_plan_prints_the_order_and_the_total_and_spends_nothing(sandbox, tmp_path):
    env = {"KLING_BASE_URL": sandbox.url, "KLING_API_KEY": sandbox.api_key, "HOME": str(tmp_path)}
    planned = kling3("story", "plan", str(story_file(tmp_path)), "--json", **env)
    assert planned.returncode == 0, planned.stderr
    data = json.loads(planned.stdout)
    assert data["stages"] == [["storm"], ["snow"], ["ship"]] and data["total"] == sum(data["credits"].values())
    per_video = kling3("story", "plan", str(story_file(tmp_path)), KLING_BUDGET__MAX_CREDITS_PER_VIDEO="450", **env)
    assert per_video.returncode == 0, per_video.stderr  # each shot is within it, though the whole is not
    too_dear = kling3("story", "plan", str(story_file(tmp_path)), KLING_BUDGET__MAX_CREDITS_PER_VIDEO="300", **env)
    assert too_dear.returncode == 1 and "435 credits" in too_dear.stderr
    refused = kling3("story", "plan", str(story_file(tmp_path)), KLING_BUDGET__DAILY_CREDITS="500", **env)
    assert refused.returncode == 1 and "daily_credits" in refused.stderr
    broken = kling3("story", "plan", str(story_file(tmp_path, LIGHTHOUSE.replace("@storm", "@nope"))), **env)
    assert broken.returncode == 2 and "no shot `nope`" in broken.stderr and "Traceback" not in broken.stderr
    assert stats(sandbox).get("requests", {}).get("generate", 0) == 0


# --- media -------------------------------------------------------------------------------------------


def clip(tmp_path: Path, name: str = "clip.mp4") -> Path:
    path = tmp_path / name
    path.write_bytes(SAMPLE_VIDEO)
    return path


def decoded(path: Path) -> tuple[list[Any], float]:
    """Every video frame, and the video stream's duration in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_image() for frame in container.decode(stream)]
        rate = float(stream.average_rate)
    return frames, len(frames) / rate


def test_a_still_is_the_first_or_last_decoded_frame(tmp_path):
    from PIL import Image, ImageChops

    source = clip(tmp_path)
    frames, _ = decoded(source)
    for which, expected in (("last_frame", frames[-1]), ("first_frame", frames[0])):
        still = Image.open(io.BytesIO(media.still(source, which))).convert("RGB")
        assert still.size == expected.size
        assert ImageChops.difference(still, expected.convert("RGB")).getbbox() is None  # the same pixels


def test_a_cut_of_matching_clips_is_a_copy_whose_length_is_the_sum(tmp_path):
    source = clip(tmp_path)
    _, one = decoded(source)
    film = media.stitch([source, source, source], tmp_path / "film.mp4")
    frames, length = decoded(film)
    rate = len(frames) / length
    assert abs(length - 3 * one) <= 2 / rate  # one frame per joint at most
    assert media.layout(film) == media.layout(source)  # packets copied, not encoded again
    with av.open(str(film)) as container:
        assert container.streams.video[0].codec_context.name == "h264" and container.streams.audio
    from PIL import ImageChops

    last = media.still(film, "last_frame")  # a 6 s film: found by seeking near its end
    from PIL import Image

    assert (
        ImageChops.difference(Image.open(io.BytesIO(last)).convert("RGB"), frames[-1].convert("RGB")).getbbox() is None
    )


def test_clips_that_differ_are_encoded_again_and_a_crossfade_overlaps_them(tmp_path):
    source = clip(tmp_path)
    frames_one, one = decoded(source)
    faded = media.stitch([source, source, source], tmp_path / "faded.mp4", "crossfade")
    frames, length = decoded(faded)
    overlap = media.CROSSFADE_SECONDS
    assert abs(length - (3 * one - 2 * overlap)) <= 2 / 10
    assert media.layout(faded) != media.layout(source)  # re-encoded
    mixed = media.stitch([source, faded], tmp_path / "mixed.mp4")  # a cut, but the clips differ
    frames, length = decoded(mixed)
    assert abs(length - (one + decoded(faded)[1])) <= 2 / 10
    assert frames[0].size == frames_one[0].size  # at the first clip's size


def silent_clip(path: Path, fps: int, seconds: float, size: tuple[int, int] = (160, 90)) -> Path:
    """A clip of another frame rate and no audio track."""
    from PIL import Image

    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index in range(round(fps * seconds)):
            picture = Image.new("RGB", size, (index * 5 % 255, 80, 160))
            output.mux(stream.encode(av.VideoFrame.from_image(picture)))
        output.mux(stream.encode(None))
    return path


def test_a_clip_of_another_rate_and_no_sound_keeps_its_length(tmp_path):
    source = clip(tmp_path)
    other = silent_clip(tmp_path / "other.mp4", fps=25, seconds=2.0)
    film = media.stitch([source, other], tmp_path / "film.mp4")
    _, length = decoded(film)
    assert abs(length - 4.0) <= 2 / 10  # 2 s + 2 s at the film's 10 frames a second
    with av.open(str(film)) as container:
        assert container.streams.audio  # silence where the clip had none


async def test_an_assistant_plans_a_story_over_mcp_and_spends_nothing(sandbox, tmp_path):
    import tomllib

    from .support import connect, server_env, text

    story = tomllib.loads(LIGHTHOUSE)
    env = server_env(sandbox, tmp_path, KLING_MCP__DAILY_CREDIT_BUDGET="1000")
    async with connect(sandbox, tmp_path, env) as client:
        planned = await client.call_tool("plan_story", {"story": story})
        broken = await client.call_tool("plan_story", {"story": {**story, "shots": story["shots"][1:]}})
    assert not planned.is_error, text(planned)
    result = planned.structured_content
    assert result["stages"] == [["storm"], ["snow"], ["ship"]] and result["total"] == sum(result["credits"].values())
    assert "[mcp] daily_credit_budget" in result["refused"]  # 1075 credits against a 1000 budget
    assert broken.is_error and "no shot `storm`" in text(broken) and "Nothing was spent" in text(broken)
    assert stats(sandbox).get("requests", {}).get("generate", 0) == 0
