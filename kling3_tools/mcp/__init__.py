"""`kling3-mcp` and `kling3 mcp`: arguments and start-up. The server module (and the mcp SDK, slow to
import) loads only once the arguments are known to be good."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..config import ConfigError, Settings
from ..errors import KlingError, install_hint


def add_arguments(parser: argparse.ArgumentParser, *, with_common: bool = True) -> None:
    """The server's flags; `with_common=False` under `kling3 mcp`, whose parser has --sandbox and --config."""
    if with_common:
        parser.add_argument("--sandbox", action="store_true", help="use an embedded local sandbox: no key, no cost")
        parser.add_argument("--config", metavar="PATH", help="TOML config file (default: $KLING_CONFIG)")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="default stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")


def run(args: argparse.Namespace) -> int:
    """Start the server from parsed arguments; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.load(args.config, base_url=getattr(args, "base_url", None))
    except (FileNotFoundError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        from .serve import serve
    except ImportError as exc:
        print(f"error: the MCP server needs the mcp extra: {install_hint('mcp')} ({exc})", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings, sandbox=args.sandbox, transport=args.transport, host=args.host, port=args.port))
    except KlingError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the user; the traceback at debug level
        logging.getLogger("kling3_tools.mcp").debug("unexpected error", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kling3-mcp",
        description="MCP server: Kling 3.0 and O3 video generation as tools for AI assistants.",
        epilog="Try it with no key: kling3-mcp --sandbox",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
