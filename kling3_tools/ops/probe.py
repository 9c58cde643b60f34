"""`python -m kling3_tools.ops.probe [PATH]`: exit 0 when this container's process answers 200 on PATH (default
`/healthz`) at `KLING_METRICS__LISTEN`, for image and compose healthchecks (the slim image has no curl).
With metrics off there is nothing to ask, and the probe passes."""

from __future__ import annotations

import os
import sys
import urllib.request

UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}  # listening everywhere: ask loopback


def main(argv: list[str]) -> int:
    listen = os.environ.get("KLING_METRICS__LISTEN", "")
    if not listen:
        return 0
    host, _, port = listen.rpartition(":")
    host = UNSPECIFIED.get(host, host if ":" not in host or host.startswith("[") else f"[{host}]")
    path = argv[0] if argv else "/healthz"
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=3) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:  # HTTPError (a 503) is one
        print(f"{path}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
