"""What the command line shows: stdout for results, stderr for the rest; exit codes; JSON and time formats."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from ..domain.catalog import Prices
from ..domain.models import GenerateRequest
from ..domain.tasks import Task

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.table import Table

    from ..domain.records import TaskRecord

# No markup or emoji codes: task ids, URLs and messages come from the API and are printed as they are.
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


def task_json(task: Task) -> dict[str, Any]:
    data = task.model_dump(mode="json")
    data["status"] = task.status.value
    return data


def record_json(record: TaskRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


def describe_cost(request: GenerateRequest, prices: Prices, unit: str) -> str:
    price = f"{request.estimated_credits(prices)} {unit}"
    if request.effective_duration is None:
        return f"{price} ({request.type}, fixed price)"
    sound = "with sound" if request.effective_sound else "silent"
    return f"{price} ({request.type}, {request.effective_duration}s, {sound})"


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def age(seconds: float) -> str:
    if seconds < 3600:
        return elapsed(seconds)
    return f"{seconds / 3600:.1f}h"


def print_rows(table: Table, rows: Sequence[Sequence[str]]) -> None:
    """`rows` in `table` on a terminal (long values fold, never cut short); piped, one tab-separated line per
    row, for `cut` and `awk`."""
    if not out.is_terminal:
        sys.stdout.write("".join("\t".join(row) + "\n" for row in rows))
        return
    for row in rows:
        table.add_row(*row)
    out.print(table)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def fail(message: str) -> None:
    err.print(Text("error: ", style="bold red") + Text(message))
