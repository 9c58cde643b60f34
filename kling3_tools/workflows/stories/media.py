"""Stills and the film, with PyAV (FFmpeg's libraries, bound to Python): no `ffmpeg` binary needed.

`still` decodes a clip's first or last frame. `stitch` joins clips: when they share codec and parameters
and the transition is a cut, packets are copied as they are (no quality lost, seconds for minutes of
video); otherwise every clip is decoded and encoded again to H.264/AAC at the first clip's size and frame
rate, which also makes crossfades possible. Frames stay in the codec's own format (only those a crossfade
blends become pixels), and memory stays flat in the number of clips: one clip is open at a time, and a
crossfade keeps only the frames it overlaps.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

from ...domain.errors import KlingError

Still = Literal["first_frame", "last_frame"]
AUDIO_RATE = 44100
CROSSFADE_SECONDS = 0.5


class MediaError(KlingError):
    """A clip cannot be read or joined."""

    default_code = "MEDIA_ERROR"


def still(video: Path, which: Still) -> bytes:
    """The first or last decoded frame of a clip, as PNG."""
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            if which == "last_frame" and container.duration and container.duration > 2_000_000:
                container.seek(container.duration - 2_000_000)  # to the keyframe before the last 2 s
            frame = None
            for decoded in container.decode(stream):
                frame = decoded
                if which == "first_frame":
                    break
    except (av.FFmpegError, IndexError) as exc:
        raise MediaError(f"cannot read a frame of {video.name}: {exc}") from None
    if frame is None:
        raise MediaError(f"{video.name} has no video frames")
    buffer = io.BytesIO()
    frame.to_image().save(buffer, "PNG")  # type: ignore[no-untyped-call]
    return buffer.getvalue()


@dataclass(frozen=True)
class Layout:
    """What must match for packets to be copied from one clip into the same stream as another's."""

    video: tuple[Any, ...]
    audio: tuple[Any, ...] | None


def layout(clip: Path) -> Layout:
    with av.open(str(clip)) as container:
        return _layout(container)


def _layout(container: Any) -> Layout:
    video = container.streams.video[0].codec_context
    audio = container.streams.audio[0].codec_context if container.streams.audio else None
    return Layout(
        (video.name, video.width, video.height, video.pix_fmt, bytes(video.extradata or b"")),
        (audio.name, audio.sample_rate, audio.layout.name, bytes(audio.extradata or b"")) if audio else None,
    )


class _Mismatch(Exception):
    """A clip whose packets cannot join the others' streams."""


def stitch(clips: list[Path], target: Path, transition: Literal["cut", "crossfade"] = "cut") -> Path:
    """Join `clips` into `target`; a copy of the streams when they allow it, else a re-encode."""
    if not clips:
        raise MediaError("a film needs at least one clip")
    try:
        if transition == "cut":
            try:
                _copy(clips, target)
                return target
            except _Mismatch:  # found before that clip's first packet: encode them all again instead
                target.unlink(missing_ok=True)
        _encode(clips, target, crossfade=transition == "crossfade")
    except (av.FFmpegError, IndexError) as exc:
        raise MediaError(f"cannot join the clips: {exc}") from None
    return target


def _copy(clips: list[Path], target: Path) -> None:
    """Packets copied clip after clip, each clip's timestamps moved past the longest stream of the clips before
    (and past the last packet written, which an encoder's leading frames would otherwise overlap)."""
    with av.open(str(target), "w") as output, av.open(str(clips[0])) as first:
        streams = {kind: output.add_stream_from_template(getattr(first.streams, kind)[0]) for kind in _kinds(first)}
        last_dts = dict.fromkeys(streams, -(2**62))
        start = Fraction(0)  # seconds: where the next clip begins
        expected = _layout(first)
        for clip in clips:
            with av.open(str(clip)) as source:
                if _layout(source) != expected:
                    raise _Mismatch(clip)
                inputs = [getattr(source.streams, kind)[0] for kind in streams]
                scale = {s.type: Fraction(s.time_base) / Fraction(streams[s.type].time_base) for s in inputs}
                shifts: dict[str, int] = {}
                ends = {kind: 0 for kind in streams}  # in each output stream's time base
                for packet in source.demux(*inputs):
                    if packet.dts is None:
                        continue
                    kind = packet.stream.type
                    factor = scale[kind]
                    pts, dts = packet.pts or 0, packet.dts
                    if factor != 1:  # clips of one layout usually share time bases too: no arithmetic then
                        pts, dts = round(pts * factor), round(dts * factor)
                    if kind not in shifts:
                        out_base = Fraction(streams[kind].time_base)
                        shifts[kind] = max(round(start / out_base), last_dts[kind] + 1 - dts)
                    packet.pts, packet.dts = pts + shifts[kind], dts + shifts[kind]
                    last_dts[kind] = packet.dts
                    ends[kind] = max(ends[kind], packet.pts + round((packet.duration or 0) * factor))
                    packet.stream = streams[kind]
                    output.mux(packet)
                start = max([start, *(end * Fraction(streams[kind].time_base) for kind, end in ends.items())])


def _kinds(container: Any) -> list[str]:
    return ["video"] + (["audio"] if container.streams.audio else [])


def _encode(clips: list[Path], target: Path, *, crossfade: bool) -> None:
    with av.open(str(clips[0])) as first:
        source = first.streams.video[0]
        width, height = source.codec_context.width, source.codec_context.height
        rate = Fraction(source.average_rate or 24).limit_denominator(1001)
    overlap = round(CROSSFADE_SECONDS * rate) if crossfade else 0
    with av.open(str(target), "w") as output:
        video = output.add_stream("libx264", rate=rate, options={"preset": "veryfast"})  # minutes, not hours
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = output.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "stereo"
        writer = _Writer(output, video, audio, overlap, rate)
        for index, clip in enumerate(clips):
            writer.add(clip, last=index == len(clips) - 1)
        writer.finish()


def _blend(before: av.VideoFrame, after: av.VideoFrame, weight: float) -> av.VideoFrame:
    """`after` over `before` at `weight` (0 to 1): the one place frames are handled as pixels."""
    mixed = before.to_ndarray(format="rgb24") * (1 - weight) + after.to_ndarray(format="rgb24") * weight
    return av.VideoFrame.from_ndarray(mixed.astype(np.uint8), format="rgb24").reformat(format="yuv420p")


class _Writer:
    """Encodes clip after clip; with an overlap, the tail of each clip is held back and blended into the
    head of the next (video frames by weight, audio samples by weight)."""

    def __init__(self, output: Any, video: Any, audio: Any, overlap: int, rate: Fraction) -> None:
        self.output, self.video, self.audio, self.overlap, self.rate = output, video, audio, overlap, rate
        self.frames = 0
        self.samples = 0
        self.held_frames: deque[av.VideoFrame] = deque()
        self.held_audio = np.zeros((2, 0), dtype=np.float32)

    def add(self, clip: Path, *, last: bool) -> None:
        """Encode a clip as it is decoded; only the frames a crossfade overlaps are held back."""
        blend, held = list(self.held_frames), deque[av.VideoFrame]()
        keep = 0 if last else self.overlap
        count = 0
        for picture in self._pictures(clip):
            if count < len(blend):  # this clip's head over the previous clip's tail
                picture = _blend(blend[count], picture, (count + 1) / (len(blend) + 1))
            count += 1
            held.append(picture)
            if len(held) > keep:
                self._picture(held.popleft())
        for picture in blend[count:]:  # a clip shorter than the overlap
            self._picture(picture)
        self.held_frames = held
        sound = self._sound_of(clip, count)
        mix = min(self.held_audio.shape[1], sound.shape[1])
        ramp = np.linspace(0, 1, mix, dtype=np.float32)
        sound[:, :mix] = self.held_audio[:, :mix] * (1 - ramp) + sound[:, :mix] * ramp
        kept = min(round(len(held) / self.rate * AUDIO_RATE), sound.shape[1])
        self._sound(sound[:, : sound.shape[1] - kept])
        self.held_audio = sound[:, sound.shape[1] - kept :]

    def _pictures(self, clip: Path) -> Iterator[av.VideoFrame]:
        """The clip's frames at the film's size and frame rate: each output frame is the latest decoded one
        at its time, so a clip of another rate keeps its length."""
        width, height = self.video.width, self.video.height
        with av.open(str(clip)) as source:
            stream = source.streams.video[0]
            interval = 1 / float(stream.average_rate or self.rate)
            start: float | None = None
            slot, previous, at = 0, None, 0.0
            for frame in source.decode(stream):
                at = float(frame.time or 0.0)
                start = at if start is None else start
                at -= start
                while previous is not None and slot / self.rate < at - 1e-6:
                    yield previous
                    slot += 1
                previous = frame.reformat(width=width, height=height, format="yuv420p")
            length = at + interval
            while previous is not None and slot / self.rate < length - 1e-6:
                yield previous
                slot += 1

    def _sound_of(self, clip: Path, frames: int) -> np.ndarray[Any, Any]:
        """The clip's audio as 44.1 kHz stereo, cut or padded with silence to its `frames` of video."""
        chunks = []
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)  # one per clip: each its own
        with av.open(str(clip)) as source:
            if source.streams.audio:
                for frame in [*source.decode(source.streams.audio[0]), None]:  # None: what the resampler holds
                    chunks += [part.to_ndarray() for part in resampler.resample(frame)]
        sound = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), dtype=np.float32)
        wanted = round(frames / self.rate * AUDIO_RATE)
        if sound.shape[1] < wanted:
            sound = np.concatenate([sound, np.zeros((2, wanted - sound.shape[1]), dtype=np.float32)], axis=1)
        return sound[:, :wanted]

    def _picture(self, frame: av.VideoFrame) -> None:
        frame.pts, frame.time_base = self.frames, 1 / self.rate  # the encoder keeps its own copy of these
        self.frames += 1
        self.output.mux(self.video.encode(frame))

    def _sound(self, sound: np.ndarray[Any, Any]) -> None:
        step = 1024
        for start in range(0, sound.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(sound[:, start : start + step]), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, self.samples, Fraction(1, AUDIO_RATE)
            self.samples += frame.samples
            self.output.mux(self.audio.encode(frame))

    def finish(self) -> None:
        for picture in self.held_frames:
            self._picture(picture)
        self._sound(self.held_audio)
        self.output.mux(self.video.encode(None))
        self.output.mux(self.audio.encode(None))
