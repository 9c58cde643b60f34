"""Helpers shared by the benchmarks: a sandbox in its own process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from harness.helpers import free_port

SANDBOX_KEY = "sandbox-key"


@contextlib.contextmanager
def sandbox_process(finish_seconds: float = 0, **options: str) -> Iterator[str]:
    """`kling3 sandbox` on a free port, in its own process; yields its base URL.

    `options` become `KLING_SANDBOX__<NAME>` variables (e.g. finish_spread="0.5").
    """
    port = free_port()
    env = {**os.environ, **{f"KLING_SANDBOX__{k.upper()}": v for k, v in options.items()}}
    command = [sys.executable, "-m", "kling3_tools", "sandbox", "--port", str(port)]
    with server_process([*command, "--finish-seconds", str(finish_seconds)], port, "/sandbox/stats", env) as url:
        yield url


@contextlib.contextmanager
def server_process(command: list[str], port: int, probe: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`command` (a server on `port` of loopback) in its own process, once `probe` answers; yields its URL."""
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}{probe}")
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise SystemExit(f"{command[0]} exited with code {process.returncode}") from None
                time.sleep(0.05)
        else:
            raise SystemExit(f"nothing answered at {url} within 30 s")
        yield url
    finally:
        process.terminate()
        process.wait()
