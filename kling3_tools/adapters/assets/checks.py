"""What a local file must be before it is uploaded, let alone paid for: its type read from its bytes (not its
name), its size, and for an image its dimensions and shape.

The limits are Kling's published ones for input images (its developer documentation for image-to-video:
JPEG or PNG, at most 10 MB, at least 300 px a side, aspect ratio between 1:2.5 and 2.5:1; WebP is accepted
here too, as the API's own examples accept it). The API page this project follows gives none for video;
`MAX_VIDEO_BYTES` is our own cap, generous for 3-15 s clips. Speech for a lip-sync: MP3, WAV, M4A or AAC of at
most 5 MB (Kling's lip-sync pages).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...domain.url_fields import URL_FIELDS

Kind = Literal["image", "video", "audio"]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_IMAGE_SIDE = 300
MAX_ASPECT = 2.5  # the longer side over the shorter one
MAX_VIDEO_BYTES = 200 * 1024 * 1024
MAX_AUDIO_BYTES = 5 * 1024 * 1024
SNIFF_BYTES = 32

KIND_OF_FIELD: dict[str, Kind] = {field: "image" for field in URL_FIELDS}
KIND_OF_FIELD |= {"video": "video", "audio": "audio"}
LIMITS: dict[Kind, int] = {"image": MAX_IMAGE_BYTES, "video": MAX_VIDEO_BYTES, "audio": MAX_AUDIO_BYTES}
WHAT: dict[Kind, str] = {
    "image": "an image (JPEG, PNG or WebP)",
    "video": "a video (MP4 or MOV)",
    "audio": "speech (MP3, WAV, M4A or AAC)",
}
SUFFIXES = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
}
QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def sniff(head: bytes) -> str | None:
    """The media type of a file from its first bytes; None for anything we do not accept."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head[:2] in (b"\xff\xf1", b"\xff\xf9"):
        return "audio/aac"
    if head[4:8] == b"ftyp" and head[8:11] == b"M4A":
        return "audio/mp4"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head[4:8] in QUICKTIME_ATOMS:
        return "video/quicktime"
    return None


@dataclass(frozen=True)
class CheckedFile:
    """A local file that passed its checks."""

    content_type: str
    size: int

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.content_type]


def check(label: str, kind: Kind, source: Path | bytes) -> CheckedFile | list[str]:
    """What one input is, or every problem it has. A file is read only as far as needed: its first bytes,
    and for an image its header (nothing is decoded)."""
    if isinstance(source, Path):
        size = source.stat().st_size
        with source.open("rb") as file:
            head = file.read(SNIFF_BYTES)
    else:
        size, head = len(source), source[:SNIFF_BYTES]
    content_type = sniff(head)
    if content_type is None or not content_type.startswith(kind):
        found = f"a {content_type.split('/')[0]}" if content_type else "something else"
        return [f"`{label}` must be {WHAT[kind]}; its content is {found}"]
    limit = LIMITS[kind]
    if size > limit:
        return [f"`{label}` is {size / 1e6:.1f} MB; the limit is {limit // (1024 * 1024)} MB"]
    if kind == "image" and (problems := _image_problems(label, source)):
        return problems
    return CheckedFile(content_type, size)


def _image_problems(label: str, source: Path | bytes) -> list[str]:
    from PIL import Image  # only when there is an image to check

    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as picture:
            width, height = picture.size
    except Image.DecompressionBombError:
        return [f"`{label}` claims more pixels than any image the API takes"]
    except Exception:  # Pillow's many ways of saying the header is not an image's
        return [f"`{label}` cannot be read as an image"]
    problems = []
    if min(width, height) < MIN_IMAGE_SIDE:
        problems.append(f"`{label}` is {width}x{height} px; each side must be at least {MIN_IMAGE_SIDE} px")
    if max(width, height) / max(1, min(width, height)) > MAX_ASPECT:
        problems.append(f"`{label}` is {width}x{height} px; its aspect ratio must lie between 1:2.5 and 2.5:1")
    return problems
