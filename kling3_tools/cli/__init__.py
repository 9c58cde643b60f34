"""`kling3`: the command line. Translation only: every rule lives in the core.

stdout carries results (a task id, a video URL, or one JSON object with
--json); progress, costs and errors go to stderr. Exit codes: 0 ok, 2 bad
input, 1 API or network error, 130 interrupted.

parser (flags) · commands (the API and the catalog) · tasks (the local store)
· workers (the poller) · output (what is shown, exit codes).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..domain.errors import KlingError, NoAPIKeyError, RequestValidationError, missing_part
from ..launch import (
    EXIT_API_ERROR,
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    end_now,
    load_settings,
    own_process,
)
from .parser import build_parser

__all__ = ["build_parser", "discord_main", "main", "run"]


# Each command's module is imported when the command runs: `kling3 cost` loads neither the HTTP client,
# nor the store, nor the sandbox.
COMMANDS = {
    "generate": "commands:cmd_generate",
    "extend": "making:cmd_extend",
    "lipsync": "making:cmd_lipsync",
    "character": "making:cmd_character",
    "person": "people:cmd_person",
    "status": "commands:cmd_status",
    "wait": "commands:cmd_wait",
    "tasks": "tasks:cmd_tasks",
    "poller": "workers:cmd_poller",
    "store": "tasks:cmd_store",
    "story": "stories:cmd_story",
    "cost": "offline:cmd_cost",
    "models": "offline:cmd_models",
    "sandbox": "offline:cmd_sandbox",
}
NO_API_KEY = (
    "No API key: set KLING_API_KEY (Kling's own API: KLING_ACCESS_KEY and KLING_SECRET_KEY), or the same in the "
    "config file (--config PATH); "
    "add --sandbox to try everything with no key and no cost. Nothing was spent."
)


def command(name: str) -> Callable[..., Any]:
    module, function = COMMANDS[name].split(":")
    found: Callable[..., Any] = getattr(importlib.import_module(f".{module}", __name__), function)
    return found


def fail(message: str) -> None:
    from .output import fail as say  # the terminal's styles load only when there is something to say

    say(message)


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
    if args.command == "poller":  # `docker stop` and supervisors send SIGTERM: clean up as on Ctrl-C
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "mcp":
            from ..mcp import run as run_mcp

            return run_mcp(args)
        if args.command == "discord":
            try:
                from kling3_discord import run as run_discord
            except ImportError as exc:
                raise UsageError(missing_part("the Discord bot", "discord", exc)) from None
            return run_discord(args)
        settings = load_settings(args)
        if settings is None:
            return EXIT_BAD_INPUT
        if args.command == "sandbox":
            return int(command("sandbox")(args, settings))
        import asyncio

        run: Callable[..., Coroutine[Any, Any, int]] = command(args.command)
        code: int = asyncio.run(run(args, settings))
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return code
    except (RequestValidationError, UsageError) as exc:
        fail(str(exc))
        return EXIT_BAD_INPUT
    except NoAPIKeyError:
        fail(NO_API_KEY)
        return EXIT_BAD_INPUT
    except KlingError as exc:
        fail(exc.message)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `kling3 tasks | head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if args.verbose:
            raise
        fail(f"{type(exc).__name__}: {exc} (run with -v for the details)")
        return EXIT_API_ERROR


def run() -> None:
    """The `kling3` command: `main`, then the process ends at once (`launch.end_now`): every command has closed
    what it opened before `main` returns."""
    own_process()
    end_now(main())


def discord_main() -> int:
    """`kling3-discord`: the bot, or one line saying how to install it."""
    own_process()
    try:
        from kling3_discord import main as bot_main
    except ImportError as exc:
        fail(missing_part("the Discord bot", "discord", exc))
        return EXIT_BAD_INPUT
    return bot_main()
