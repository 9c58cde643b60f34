"""Stitching a film: `stories.media.stitch` vs PyAV's own minimal loops, side by side in one run.

    python -m benchmarks.stories [--clips 10] [--seconds 5] [--height 1080]

Makes `--clips` H.264/AAC clips of `--seconds` at `--height` (16:9, 24 fps), then times:
- stream copy: `stitch` (cut, matching clips) vs a bare demux → shift timestamps → mux loop;
- re-encode: `stitch` of clips that differ (every other clip at another size) vs a bare decode → scale →
  encode loop with the same encoder settings;
and the peak RSS of a fresh process re-encoding 2 clips and all of them (flat: it does not grow with the
number of clips). The re-encodes run once (the clips are long enough for one run to be steady); the copies, tens of
milliseconds, alternate seven times and the best of each is compared.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from kling3_tools.workflows.stories import media

RATE = 24


def make_clip(path: Path, seconds: float, height: int) -> Path:
    width = height * 16 // 9 // 2 * 2
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=RATE, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = output.add_stream("aac", rate=media.AUDIO_RATE)
        audio.layout = "stereo"
        base = np.zeros((height, width, 3), dtype=np.uint8)
        for index in range(round(seconds * RATE)):
            base[:, :, 0] = index * 3 % 255
            base[: height // 2, : width // 2, 1] = 200
            frame = av.VideoFrame.from_ndarray(base, format="rgb24")
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
        samples = round(seconds * media.AUDIO_RATE)
        tone = np.sin(np.arange(samples, dtype=np.float32) * 2 * np.pi * 440 / media.AUDIO_RATE) * 0.2
        for start in range(0, samples, 1024):
            part = np.ascontiguousarray(np.stack([tone[start : start + 1024]] * 2))
            frame = av.AudioFrame.from_ndarray(part, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = media.AUDIO_RATE, start
            output.mux(audio.encode(frame))
        output.mux(audio.encode(None))
    return path


def bare_copy(clips: list[Path], target: Path) -> None:
    """PyAV's minimal concat: copy packets, each clip's timestamps moved past what was written before."""
    with av.open(str(target), "w") as output, av.open(str(clips[0])) as first:
        streams = {s.type: output.add_stream_from_template(s) for s in (first.streams.video[0], first.streams.audio[0])}
        ends = {"video": 0, "audio": 0}
        last_dts = {"video": -(2**62), "audio": -(2**62)}
        for clip in clips:
            with av.open(str(clip)) as source:
                shifts: dict[str, int] = {}
                for packet in source.demux(source.streams.video[0], source.streams.audio[0]):
                    if packet.dts is None:
                        continue
                    kind = packet.stream.type
                    shift = shifts.setdefault(kind, max(ends[kind], last_dts[kind] + 1 - packet.dts))
                    packet.pts += shift
                    packet.dts += shift
                    last_dts[kind] = packet.dts
                    ends[kind] = max(ends[kind], packet.pts + (packet.duration or 0))
                    packet.stream = streams[kind]
                    output.mux(packet)


def bare_encode(clips: list[Path], target: Path, width: int, height: int) -> None:
    """PyAV's minimal re-encode: decode, scale, encode (video; audio decoded and encoded again too)."""
    with av.open(str(target), "w") as output:
        video = output.add_stream("libx264", rate=RATE, options={"preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = output.add_stream("aac", rate=media.AUDIO_RATE)
        audio.layout = "stereo"
        frames = samples = 0
        for clip in clips:
            with av.open(str(clip)) as source:
                for frame in source.decode(source.streams.video[0]):
                    scaled = frame.reformat(width=width, height=height, format="yuv420p")
                    scaled.pts, scaled.time_base = frames, Fraction(1, RATE)
                    frames += 1
                    output.mux(video.encode(scaled))
            with av.open(str(clip)) as source:
                resampler = av.AudioResampler(format="fltp", layout="stereo", rate=media.AUDIO_RATE)
                for frame in [*source.decode(source.streams.audio[0]), None]:
                    for part in resampler.resample(frame):
                        part.pts, samples = samples, samples + part.samples
                        output.mux(audio.encode(part))
        output.mux(video.encode(None))
        output.mux(audio.encode(None))


def stitch_rss_mb(clips: list[Path], target: Path) -> float:
    """Peak RSS of a fresh process that stitches `clips` (each measure in its own process: a peak only grows)."""
    script = (
        "import resource, sys; from pathlib import Path; from kling3_tools.workflows.stories import media; "
        "media.stitch([Path(p) for p in sys.argv[2:]], Path(sys.argv[1])); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(target), *map(str, clips)], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def timed(work: object) -> float:
    started = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--height", type=int, default=1080)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        same = [make_clip(root / f"same{i}.mp4", args.seconds, args.height) for i in range(args.clips)]
        other = make_clip(root / "other.mp4", args.seconds, args.height * 2 // 3 // 2 * 2)  # another size
        mixed = [clip if i % 2 == 0 else other for i, clip in enumerate(same)]
        print(
            f"{args.clips} clips of {args.seconds:g} s at {args.height}p made in {time.perf_counter() - started:.0f} s"
        )
        with av.open(str(same[0])) as first:
            width, height = first.streams.video[0].width, first.streams.video[0].height

        copies = []
        for _ in range(7):  # tens of milliseconds: best of 7 each, alternating
            copies.append(
                (
                    timed(lambda: media.stitch(same, root / "ours.mp4")),
                    timed(lambda: bare_copy(same, root / "bare.mp4")),
                )
            )
        ours, bare = min(c[0] for c in copies), min(c[1] for c in copies)
        ratio = ours / bare
        print(
            f"stream copy: stitch {ours * 1000:.1f} ms, bare loop {bare * 1000:.1f} ms: {ratio:.2f}x (target <= 1.1x)"
        )

        ours = timed(lambda: media.stitch(mixed, root / "ours-encoded.mp4"))
        bare = timed(lambda: bare_encode(mixed, root / "bare-encoded.mp4", width, height))
        print(f"re-encode:   stitch {ours:.1f} s, bare loop {bare:.1f} s: {ours / bare:.2f}x (target <= 1.1x)")
        two, every = stitch_rss_mb(mixed[:2], root / "rss2.mp4"), stitch_rss_mb(mixed, root / "rss.mp4")
        print(f"re-encode peak RSS: {two:.0f} MB for 2 clips, {every:.0f} MB for {args.clips} (target: flat)")


if __name__ == "__main__":
    main()
