"""`kling3-mcp` and `kling3 mcp`: arguments and start-up. The server module (and the mcp SDK, slow to
import) loads only once the arguments are known to be good."""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from ..domain.errors import install_hint
from ..launch import EXIT_BAD_INPUT, end_now, own_process, read_settings, run_to_end, say_error


def add_arguments(parser: argparse.ArgumentParser, *, with_common: bool = True) -> None:
    """The server's flags; `with_common=False` under `kling3 mcp`, whose parser has --sandbox and --config."""
    if with_common:
        parser.add_argument("--sandbox", action="store_true", help="use an embedded local sandbox: no key, no cost")
        parser.add_argument("--config", metavar="PATH", help="TOML config file (default: $KLING_CONFIG)")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="default stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")


def run(args: argparse.Namespace) -> int:
    """Start the server from parsed arguments; the process ends with its exit code once it has stopped
    (returns only when the mcp extra is missing). The settings are read by `serve`."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        from .serve import serve
    except ImportError as exc:
        say_error(f"the MCP server needs the mcp extra: {install_hint('mcp')} ({exc})")
        return EXIT_BAD_INPUT
    end_now(
        run_to_end(
            lambda: serve(
                functools.partial(read_settings, args),
                sandbox=args.sandbox,
                transport=args.transport,
                host=args.host,
                port=args.port,
            ),
            logging.getLogger("kling3_tools.mcp"),
        )
    )


def main(argv: list[str] | None = None) -> int:
    own_process()
    parser = argparse.ArgumentParser(
        prog="kling3-mcp",
        description="MCP server: Kling 3.0 and O3 video generation as tools for AI assistants.",
        epilog="Try it with no key: kling3-mcp --sandbox",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
