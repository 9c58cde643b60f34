"""The blocking client, for scripts and notebooks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ..domain.models import GenerateRequest
from ..domain.tasks import Task
from .client import AsyncKlingClient

T = TypeVar("T")


class KlingClient:
    """Blocking facade over `AsyncKlingClient`, for scripts and notebooks. Its calls run on a private event
    loop in a thread of its own, so it also works where a loop is already running (Jupyter, an async app)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kling3-client", daemon=True)
        self._thread.start()
        self._client = AsyncKlingClient(*args, **kwargs)

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def __enter__(self) -> KlingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KlingClient(base_url={self._client.base_url!r})"

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def generate(self, request: GenerateRequest) -> Task:
        return self._run(self._client.generate(request))

    def status(self, task_id: str) -> Task:
        return self._run(self._client.status(task_id))

    def wait(self, task_id: str, **kwargs: Any) -> Task:
        return self._run(self._client.wait(task_id, **kwargs))

    def generate_and_wait(self, request: GenerateRequest, **kwargs: Any) -> Task:
        return self._run(self._client.generate_and_wait(request, **kwargs))

    def download(self, task: Task, path: str | Path) -> Path:
        return self._run(self._client.download(task, path))

    def estimate_cost(self, request: GenerateRequest) -> int:
        return self._client.estimate_cost(request)
