import pytest

from kling3_tools.domain.catalog import END_FRAME_WIRE_FIELD, TaskType
from kling3_tools.domain.errors import RequestValidationError
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.rules import quote
from kling3_tools.domain.tasks import Task, TaskStatus, normalise_status

IMG = "https://example.com/a.jpg"
VID = "https://example.com/a.mp4"


def problems(**fields) -> list[str]:
    with pytest.raises(RequestValidationError) as info:
        GenerateRequest.build(**fields)
    return info.value.problems


def test_defaults_are_explicit_on_the_wire():
    request = GenerateRequest.build(type="pro-text-to-video", prompt="An eagle")
    assert request.to_payload() == {
        "type": "pro-text-to-video",
        "prompt": "An eagle",
        "duration": 5,
        "aspect_ratio": "16:9",
        "sound": True,
    }
    assert request.estimated_credits() == 400


def test_silent_video_is_cheaper():
    request = GenerateRequest.build(type="std-text-to-video", prompt="x", duration=10, sound=False)
    assert request.estimated_credits() == 400
    assert request.to_payload()["sound"] is False


def test_end_frame_goes_out_under_its_wire_name():
    request = GenerateRequest.build(type="pro-image-to-video", prompt="x", image=IMG, end_image=IMG)
    payload = request.to_payload()
    assert payload[END_FRAME_WIRE_FIELD] == IMG
    assert "end_image" not in payload


def test_edit_sends_no_duration_and_costs_fixed():
    request = GenerateRequest.build(type="o3-pro-video-edit", prompt="snow", video=VID, keep_original_sound=True)
    assert request.to_payload() == {
        "type": "o3-pro-video-edit",
        "prompt": "snow",
        "video": VID,
        "keep_original_sound": True,
    }
    assert request.estimated_credits() == 435


def test_every_problem_is_reported_at_once():
    found = problems(type="pro-text-to-video", prompt="", duration=20, aspect_ratio="4:3", images=[IMG], cfg_scale=2)
    assert len(found) == 5
    joined = "\n".join(found)
    for field in ("prompt", "duration", "aspect_ratio", "images", "cfg_scale"):
        assert f"`{field}`" in joined


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"type": "pro-text-to-video", "prompt": "   "}, "`prompt`: must not be blank"),
        ({"type": "pro-text-to-video", "prompt": "x" * 2001}, "at most 2000 characters"),
        ({"type": "pro-text-to-video", "prompt": "x", "duration": 2}, "`duration` must be 3-15 seconds (got 2)"),
        ({"type": "pro-text-to-video", "prompt": "x", "duration": 16}, "`duration` must be 3-15 seconds (got 16)"),
        ({"type": "pro-text-to-video", "prompt": "x", "duration": 5.5}, "`duration` must be 3-15 seconds (got 5.5)"),
        ({"type": "pro-image-to-video", "prompt": "x"}, "pro-image-to-video requires `image`"),
        ({"type": "o3-std-video-edit", "prompt": "x"}, "o3-std-video-edit requires `video`"),
        ({"type": "o3-pro-video-edit", "prompt": "x", "video": VID, "duration": 5}, "does not take `duration`"),
        ({"type": "o3-pro-text-to-video", "prompt": "x", "cfg_scale": 0.5}, "only Kling 3.0 types take it"),
        ({"type": "pro-text-to-video", "prompt": "x", "end_image": IMG}, "only image-to-video types take it"),
        ({"type": "pro-text-to-video", "prompt": "x", "images": [IMG]}, "only O3 reference-to-video types take it"),
        ({"type": "o3-pro-reference-to-video", "prompt": "x", "images": [IMG] * 8}, "at most 7 items"),
        ({"type": "o3-pro-reference-to-video", "prompt": "x"}, "needs reference `images` or a reference `video`"),
        ({"type": "pro-image-to-video", "prompt": "x", "image": "ftp://example.com/a.jpg"}, "http(s) URL"),
        ({"type": "pro-image-to-video", "prompt": "x", "image": "not a url"}, "`image`"),
        ({"type": "pro-text-to-video", "prompt": "x", "cfg_scale": -0.1}, "greater than or equal to 0"),
        ({"type": "ultra-video", "prompt": "x"}, "`type`"),
        ({"type": "pro-text-to-video", "prompt": "x", "colour": "red"}, "`colour` is not a field"),
        ({"prompt": "x"}, "`type` is required"),
    ],
)
def test_each_rule(fields, expected):
    assert any(expected in problem for problem in problems(**fields)), problems(**fields)


def test_valid_requests_of_every_mode():
    GenerateRequest.build(type="o3-pro-reference-to-video", prompt="x", images=[IMG] * 7, duration=15)
    GenerateRequest.build(type="o3-std-reference-to-video", prompt="x", video=VID)
    GenerateRequest.build(type="std-image-to-video", prompt="x", image=IMG, cfg_scale=0, negative_prompt="blur")
    GenerateRequest.build(type="o3-std-image-to-video", prompt="x", image=IMG, aspect_ratio="1:1", duration=3)


def test_quote_needs_no_prompt():
    assert quote("pro-text-to-video", 10, sound=False) == 540
    assert quote("o3-std-video-edit") == 360
    with pytest.raises(RequestValidationError, match="duration"):
        quote("pro-text-to-video", 30)
    with pytest.raises(RequestValidationError, match="does not take `duration`"):
        quote("o3-pro-video-edit", 5)
    with pytest.raises(RequestValidationError, match="unknown task type"):
        quote("nope")


def test_task_reads_the_page_example_and_keeps_unknown_fields():
    task = Task.model_validate(
        {
            "task_id": "n75abc123kling3",
            "status": "SUCCESS",
            "consumed_credits": 400,
            "created_at": "2026-02-05T10:30:00Z",
            "request": {"type": "pro-text-to-video"},
            "response": ["https://cdn.example.com/videos/abc123.mp4"],
            "error_message": None,
            "type": "pro-text-to-video",
            "progress": 100,
        }
    )
    assert task.status is TaskStatus.SUCCEEDED
    assert task.video_url == "https://cdn.example.com/videos/abc123.mp4"
    assert task.created_at is not None and task.created_at.year == 2026
    assert task.model_extra == {"progress": 100}


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("IN_PROGRESS", TaskStatus.RUNNING),
        ("PENDING", TaskStatus.QUEUED),
        ("queued", TaskStatus.QUEUED),
        ("COMPLETED", TaskStatus.SUCCEEDED),
        ("SUCCESS", TaskStatus.SUCCEEDED),
        ("EXPIRED", TaskStatus.FAILED),
        ("failed", TaskStatus.FAILED),
        ("SOMETHING_NEW", TaskStatus.RUNNING),
        (None, TaskStatus.RUNNING),
    ],
)
def test_status_words_are_normalised(word, status):
    assert normalise_status(word) is status
    assert Task.model_validate({"task_id": "n71x", "status": word}).status is status


def test_odd_response_shapes_are_tolerated():
    assert Task.model_validate({"task_id": "x", "response": "https://a/b.mp4"}).video_urls == ["https://a/b.mp4"]
    assert Task.model_validate({"task_id": "x", "response": [{"url": "https://a/c.mp4"}]}).video_urls == [
        "https://a/c.mp4"
    ]
    assert Task.model_validate({"task_id": "x", "response": None}).video_urls == []


def test_request_is_typed():
    request = GenerateRequest.build(type="o3-pro-text-to-video", prompt="x")
    assert request.type is TaskType.O3_PRO_TEXT_TO_VIDEO
