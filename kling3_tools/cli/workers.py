"""`kling3 poller`: one poller in this process, or N worker processes kept running; the notifiers other packages
add (Discord delivery over REST) found through their entry points."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from .. import ops
from ..adapters.store import is_postgres_url
from ..config import Settings
from ..config_sources import ConfigError
from ..launch import EXIT_BAD_INPUT, EXIT_OK, UsageError, exempt_loaded_objects_from_gc
from .commands import open_service
from .output import err

if TYPE_CHECKING:
    from ..service import KlingService
    from ..workflows.notifiers import Notifier


async def cmd_poller(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.workers > 1:
        return await _run_workers(args, settings)
    logging.getLogger("kling3_tools.poller").setLevel(logging.INFO)
    observer = ops.observer_for(settings, "poller")
    async with (
        open_service(args, settings, observer, wait_for_store=True) as service,
        ops.exposed(service),
        contextlib.AsyncExitStack() as stack,
    ):
        service.require_key()  # a poller's whole work is asking the API
        for notifier in await worker_notifiers(service, stack):
            service.register(notifier)
        poller = service.poller()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # graceful: finish or hand back what is in flight
            loop.add_signal_handler(signum, poller.stop)
        err.print(
            f"Polling for {', '.join(service.delivered_kinds())} tasks of {service.base_url} "
            f"as {poller.owner}; Ctrl-C stops."
        )
        exempt_loaded_objects_from_gc()
        await poller.run()
    return EXIT_OK


async def worker_notifiers(service: KlingService, stack: contextlib.AsyncExitStack) -> list[Notifier]:
    """The notifiers other packages add to a worker (`[project.entry-points."kling3_tools.notifiers"]`): each
    entry opens one for `service`, or yields None when it is not configured; a wrong configuration is one
    line, exit 2."""
    notifiers = []
    for entry in entry_points(group="kling3_tools.notifiers"):
        try:
            notifier = await stack.enter_async_context(entry.load()(service))
        except (ConfigError, ImportError) as exc:
            raise UsageError(str(exc)) from None
        if notifier is not None:
            notifiers.append(notifier)
    return notifiers


WORKER_RESTART_SECONDS = 2.0


async def _run_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Start N `kling3 poller` processes and keep them running; stop them all on Ctrl-C or SIGTERM."""
    if args.sandbox:
        raise UsageError(
            "--workers needs one API that every worker shares: run `kling3 sandbox` and set KLING_BASE_URL to it"
        )
    env = dict(os.environ)
    if not is_postgres_url(settings.store.url):  # SQLite cannot share a bucket between processes: split it
        env["KLING_POLLER__RATE_SHARED_BY"] = str(args.workers)
    command = [sys.executable, "-m", "kling3_tools"]
    if args.config:
        command += ["--config", args.config]
    if args.base_url:
        command += ["--base-url", args.base_url]
    command += ["-v"] * args.verbose + ["poller"]

    async def start(index: int) -> asyncio.subprocess.Process:
        if settings.metrics.listen:  # one port each: worker i serves its endpoints on the port + i
            host, port = settings.metrics.address
            env["KLING_METRICS__LISTEN"] = f"{host}:{port + index}"
        worker = await asyncio.create_subprocess_exec(*command, env=env, stdin=asyncio.subprocess.DEVNULL)
        err.print(f"worker {index} started (pid {worker.pid})")
        return worker

    workers = [await start(i) for i in range(args.workers)]
    try:
        while True:
            exits = {asyncio.ensure_future(w.wait()): i for i, w in enumerate(workers)}
            done, pending = await asyncio.wait(exits, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            for waiter in done:
                index, code = exits[waiter], waiter.result()
                if code == EXIT_BAD_INPUT:
                    err.print(f"worker {index} refused its configuration; stopping")
                    return EXIT_BAD_INPUT
                err.print(f"worker {index} exited with code {code}; restarting in {WORKER_RESTART_SECONDS:g}s")
                await asyncio.sleep(WORKER_RESTART_SECONDS)
                workers[index] = await start(index)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.terminate()
        await asyncio.gather(*(w.wait() for w in workers))
