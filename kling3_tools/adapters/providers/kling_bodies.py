"""The bodies of Kling's video calls, one function per endpoint family (the decisions are in `kling`'s docstring)."""

from __future__ import annotations

from typing import Any

from ...domain.catalog import DEFAULT_VOICE, Mode
from ...domain.models import GenerateRequest
from ...domain.url_fields import INLINE_IMAGE

NEXT_SHOT = "Based on <<<video_1>>>, generate the next shot: {prompt}"


def as_id(value: str) -> int | str:
    """An element id as Kling writes it: a number (ours keeps it as text)."""
    return int(value) if value.isdigit() else value


def kling3_body(request: GenerateRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": request.prompt or request.summary,
        "duration": str(request.effective_duration),
        "aspect_ratio": str(request.aspect_ratio or "16:9"),
        "sound": "on" if request.effective_sound else "off",
    }
    if request.cfg_scale is not None:
        body["cfg_scale"] = request.cfg_scale
    if request.image:
        body["image"] = request.image
    if request.end_image:
        body["image_tail"] = request.end_image
    return body | multi_shot(request)


def multi_shot(request: GenerateRequest) -> dict[str, Any]:
    """Native multi-shot: Kling ignores the top-level prompt then, and cuts the shots as given; a shot that names
    no character gets the request's characters named, as a prompt does."""
    if not request.shots:
        return {}
    names = ", ".join(f"<<<element_{n}>>>" for n in range(1, len(request.characters or []) + 1))
    shots = [
        {"index": n, "prompt": f"{s.prompt} ({names})" if names and "<<<" not in s.prompt else s.prompt}
        | {"duration": str(s.duration)}
        for n, s in enumerate(request.shots, 1)
    ]
    return {"multi_shot": True, "shot_type": "customize", "multi_prompt": shots}


def motion_body(request: GenerateRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image_url": request.image,
        "video_url": request.video,
        "character_orientation": request.character_orientation or "image",
        "keep_original_sound": "no" if request.keep_original_sound is False else "yes",
    }
    return body | ({"prompt": request.prompt} if request.prompt else {})


def lip_sync_body(request: GenerateRequest) -> dict[str, Any]:
    said: dict[str, Any] = (
        {"mode": "audio2video", "audio_type": "url", "audio_url": request.audio}
        if request.audio
        else {"mode": "text2video", "text": request.text, "voice_id": request.voice or DEFAULT_VOICE}
        | {"voice_language": "en", "voice_speed": 1.0}
    )
    return {"input": {"video_url": request.video} | said}


def omni_body(request: GenerateRequest) -> dict[str, Any]:
    mode = request.spec.mode
    prompt = request.prompt or request.summary
    body: dict[str, Any] = {}
    if mode is Mode.EDIT:
        keep = "yes" if request.keep_original_sound else "no"
        edited: dict[str, Any] = {"video_url": request.video, "refer_type": "base", "keep_original_sound": keep}
        body["video_list"] = [edited]
        return body | {"prompt": prompt}
    if mode is Mode.EXTEND:
        source = {"video_url": request.video, "refer_type": "feature", "keep_original_sound": "no"}
        body = {"video_list": [source], "prompt": NEXT_SHOT.format(prompt=prompt)}
        return body | {"duration": str(request.effective_duration), "sound": "off"}
    images: list[dict[str, Any]] = [{"image_url": url} for url in request.images or []]
    if mode is Mode.IMAGE:
        images = [{"image_url": request.image, "type": "first_frame"}]
        if request.end_image:
            images.append({"image_url": request.end_image, "type": "end_frame"})
    if images:
        body["image_list"] = images
    names = [f"<<<image_{n}>>>" for n in range(1, len(images) + 1)] if mode is Mode.REFERENCE else []
    if request.characters:
        body["element_list"] = [{"element_id": as_id(element)} for element in request.characters]
        names += [f"<<<element_{n}>>>" for n in range(1, len(request.characters) + 1)]
    if mode is Mode.REFERENCE and request.video:
        body["video_list"] = [{"video_url": request.video, "refer_type": "feature"}]
        names.append("<<<video_1>>>")
    if names and "<<<" not in prompt:
        prompt = f"{prompt} ({', '.join(names)})"
    sound = request.effective_sound and "video_list" not in body
    duration = str(request.effective_duration)
    return (
        body
        | {"prompt": prompt, "duration": duration, "aspect_ratio": str(request.aspect_ratio or "16:9")}
        | {"sound": "on" if sound else "off"}
        | multi_shot(request)
    )


def inline(value: Any) -> Any:
    """An image sent inline as Kling takes it: the base64 alone, without its `data:` prefix."""
    if isinstance(value, str) and INLINE_IMAGE.fullmatch(value):
        return value.partition(",")[2]
    if isinstance(value, list):
        return [{k: inline(v) for k, v in item.items()} if isinstance(item, dict) else inline(item) for item in value]
    return value
