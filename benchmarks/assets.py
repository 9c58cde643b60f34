"""Uploads through the asset store vs obstore alone, and memory while streaming a large file, in one run.

    python -m benchmarks.assets [--mb 50] [--rounds 3] [--big-mb 1024]

moto's S3 server runs in its own process (it keeps objects in memory, which must not count as ours).
Rounds alternate between `ObjectAssetStore.put` and a bare `obstore.put_async` of the same file (what
`aws s3 cp` does: a streamed multipart upload); the best round of each is compared. Then one file of
`--big-mb` goes through `ObjectAssetStore.put`, and this process's peak RSS is read before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from harness.helpers import free_port
from kling3_tools.adapters.assets.store import ObjectAssetStore
from kling3_tools.config import StorageSettings

BUCKET = "kling3-bench"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.put(f"{endpoint}/{BUCKET}")  # creates the bucket (no auth checks in moto)
            return process, endpoint
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("moto's server did not start")


def write_file(path: Path, megabytes: int) -> None:
    block = os.urandom(1024 * 1024)
    with path.open("wb") as file:
        for _ in range(megabytes):
            file.write(block)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=1024)
    args = parser.parse_args()
    moto, endpoint = start_moto()
    try:
        settings = StorageSettings(
            url=f"s3://{BUCKET}/bench",
            endpoint=endpoint,
            region="us-east-1",
            access_key_id=SecretStr("k"),
            secret_access_key=SecretStr("s"),
        )
        assets = ObjectAssetStore(settings)
        import obstore

        with tempfile.TemporaryDirectory() as folder:
            sample = Path(folder) / "sample.mp4"
            write_file(sample, args.mb)
            ours, bare = [], []
            for round_ in range(args.rounds):
                started = time.perf_counter()
                await assets.put(sample, content_type="video/mp4", suffix=".mp4")
                ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                with sample.open("rb") as file:
                    await obstore.put_async(assets.store, f"bench/bare-{round_}.mp4", file)
                bare.append(time.perf_counter() - started)
            ours_rate, bare_rate = args.mb / min(ours), args.mb / min(bare)
            print(f"{args.mb} MB upload: asset store {ours_rate:.0f} MB/s, obstore alone {bare_rate:.0f} MB/s")
            print(f"ratio (asset store / obstore alone): {ours_rate / bare_rate:.2f}x  (target >= 0.9x)")
            sample.unlink()

            big = Path(folder) / "big.mp4"
            write_file(big, args.big_mb)
            before = peak_rss_mb()
            started = time.perf_counter()
            await assets.put(big, content_type="video/mp4", suffix=".mp4")
            elapsed = time.perf_counter() - started
            after = peak_rss_mb()
            print(
                f"{args.big_mb} MB streamed in {elapsed:.1f} s: peak RSS {before:.0f} MB before, {after:.0f} MB after "
                f"(+{after - before:.0f} MB; target: flat, under 100 MB)"
            )
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    asyncio.run(main())
