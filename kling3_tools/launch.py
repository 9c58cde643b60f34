"""Starting a long-lived front end (the MCP server, the Discord bot) the same way: its settings or exit 2 (the
MCP server over stdio reads them when its core opens, and says a failure in its answers), one line per error
and exit 1 (the traceback at debug level), 130 on Ctrl-C; once its core is loaded, that heap is kept out of
the garbage collector's walks. Exit codes are the CLI's too."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn

from .domain.errors import KlingError

if TYPE_CHECKING:  # loaded when needed: `kling3 --help` and `kling3 cost` read no settings
    from .config import Settings

EXIT_OK, EXIT_API_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class UsageError(Exception):
    """Bad flags or configuration: exit 2."""


def own_process() -> None:
    """What an entry point does first, for a process that is ours: httpx's package import also loads httpx's
    own command line (click, pygments, rich's progress and syntax: ~25 ms) whenever those are installed
    (encode/httpx#3547), and no process of ours runs it. A module set to None in `sys.modules` is one that
    cannot be imported, which httpx already handles."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def exempt_loaded_objects_from_gc() -> None:
    """What a long-lived process of ours does once its core is loaded: every object alive now (modules,
    classes, the service, the bot; whatever is in flight too, a few KB once) lives as long as the process,
    so the cyclic garbage collector stops walking them (`gc.freeze`). A full collection over them took
    ~50 ms in the Discord benchmark's process and fell in the first burst of commands after login, holding
    every defer back that long. Never done in an embedder's process: its heap is its own."""
    import gc

    gc.freeze()


def end_now(code: int) -> NoReturn:
    """End the process at once with `code`, once it has closed what it opened (leases, the store, the pool):
    tearing every module down one by one is time a user or an MCP client waits for, and nothing else."""
    with contextlib.suppress(OSError):  # a reader that went away (`kling3 tasks | head -1`) wanted no more
        sys.stdout.flush()
        sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def on_stop_signals(first: Callable[[], None], signals: tuple[int, ...] = STOP_SIGNALS) -> None:
    """On the running loop: `first()` on the first of `signals` (a graceful stop); any after it ends the
    process at once."""
    import asyncio

    def stop() -> None:
        end_at_once_on(signals)
        first()

    for signum in signals:
        asyncio.get_running_loop().add_signal_handler(signum, stop)


def end_at_once_on(signals: tuple[int, ...] = STOP_SIGNALS) -> None:
    """From now on, any of `signals` ends the process at once (exit 130): one more while it closes gracefully."""
    import asyncio

    for signum in signals:
        asyncio.get_running_loop().add_signal_handler(signum, end_now, EXIT_INTERRUPTED)


def say_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def read_settings(args: argparse.Namespace) -> Settings:
    """The settings `--config` and `--base-url` name, or `UsageError` saying why they cannot load (never a value)."""
    from .config import Settings
    from .config_sources import ConfigError

    try:
        return Settings.load(
            args.config, base_url=getattr(args, "base_url", None), provider=getattr(args, "provider", None)
        )
    except (FileNotFoundError, ConfigError) as exc:
        raise UsageError(str(exc)) from None


def load_settings(args: argparse.Namespace) -> Settings | None:
    """`read_settings`, or None once the reason they cannot load was said."""
    try:
        return read_settings(args)
    except UsageError as exc:
        say_error(str(exc))
        return None


def run_to_end(
    work: Callable[[], Coroutine[Any, Any, None]],
    log: logging.Logger,
    explain: Callable[[Exception], str | None] = lambda exc: None,
) -> int:
    """Run `work` until it returns; `explain` words the errors this front end knows better."""
    import asyncio

    try:
        asyncio.run(work())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except UsageError as exc:
        say_error(str(exc))
        return EXIT_BAD_INPUT
    except Exception as exc:
        message = explain(exc)
        if message is None and isinstance(exc, KlingError):
            message = exc.message
        if message is None:
            log.debug("unexpected error", exc_info=True)
            message = f"{type(exc).__name__}: {exc}"
        say_error(message)
        return EXIT_API_ERROR
    return EXIT_OK
