"""The argument parser. The request's flags come from the request model's fields: a field added there is a
flag here, shaped by its type (`--flag/--no-flag` for a bool, repeatable for a list)."""

from __future__ import annotations

import argparse
import functools
from typing import Any, Literal, get_args, get_origin

from ..domain import catalog
from ..domain.models import GenerateRequest, StatusFilter
from ..version import __version__


def _whole_number(text: str) -> int | str:
    """An int when the text is one; else the text itself, for the request's checks to name."""
    try:
        return int(text)
    except ValueError:
        return text


# How a request field looks here when `--its-name VALUE` (`--its-name/--no-its-name` for a bool) is not enough.
FLAG_LOOKS: dict[str, dict[str, Any]] = {
    "type": {
        "flags": ("-t", "--type"),
        "metavar": "TYPE",
        "default": catalog.TaskType.PRO_TEXT_TO_VIDEO.value,
        "help": f"task type: {', '.join(catalog.CATALOG)}",
    },
    "duration": {"flags": ("-d", "--duration")},
    "aspect_ratio": {"flags": ("-a", "--aspect-ratio"), "metavar": "RATIO"},
    "images": {
        "flags": ("--ref-image",),
        "help": f"reference image URL or local file, repeatable (at most {catalog.MAX_REFERENCE_IMAGES})",
    },
    "cfg_scale": {"metavar": "0-1"},
    "characters": {"flags": ("--character",), "metavar": "NAME", "help": "a character of yours, repeatable"},
    "shots": {"flags": ("--shot",), "metavar": "SECONDS:PROMPT", "help": "native multi-shot: one shot, repeatable"},
}


def _request_flag(name: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The flag of one request field, from the field's type and description."""
    field = GenerateRequest.model_fields[name]
    value_type = GenerateRequest.value_type(name)
    options: dict[str, Any] = {"help": field.description, "dest": name}
    if value_type is bool:
        options |= {"action": argparse.BooleanOptionalAction, "default": None}
    elif get_origin(value_type) is Literal:
        options |= {"choices": get_args(value_type)}
    elif get_origin(value_type) is list:
        options |= {"action": "append", "metavar": "URL|PATH" if "URL" in (field.description or "") else "VALUE"}
    elif value_type is int:
        options["type"] = _whole_number  # checked with the rest of the request, so every problem is listed at once
    elif value_type is float:
        options |= {"type": float, "metavar": "NUMBER"}
    else:
        options["metavar"] = "URL|PATH" if "URL" in (field.description or "") else "TEXT"
    looks = dict(FLAG_LOOKS.get(name, {}))
    flags = looks.pop("flags", ("--" + name.replace("_", "-"),))
    return flags, options | looks


def _add_request_flags(parser: argparse.ArgumentParser, *, prompt_help: str) -> None:
    parser.add_argument("prompt", nargs="?", help=prompt_help)
    for name in GenerateRequest.model_fields:
        if name != "prompt":
            flags, options = _request_flag(name)
            parser.add_argument(*flags, **options)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")


def types_of(mode: catalog.Mode) -> list[str]:
    return [spec.type.value for spec in catalog.list_models() if spec.mode is mode]


def _days(text: str) -> float:
    """`90` or `90d`: days, at least one (the budgets look back 24 hours)."""
    try:
        days = float(text.removesuffix("d"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (e.g. 90d)") from None
    if days < 1:
        raise argparse.ArgumentTypeError("must be at least 1 day: the budgets look back 24 hours")
    return days


def _add_wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=900, metavar="SECONDS", help="give up waiting after this")
    parser.add_argument("--download", metavar="PATH", help="save the video here (a file or a folder)")


def _add_common_flags(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """Flags every command takes, before or after its name (`kling3 --sandbox tasks`, `kling3 tasks --sandbox`);
    after it they leave unset what was given before."""
    unset: Any = argparse.SUPPRESS if after_command else None
    parser.add_argument("--config", metavar="PATH", default=unset, help="TOML config file (default: $KLING_CONFIG)")
    parser.add_argument(
        "--provider",
        metavar="NAME",
        default=unset,
        help="the API's format, as `provider` in the config (default kling3api)",
    )
    parser.add_argument("--base-url", metavar="URL", default=unset, help="API base URL (default: the provider's own)")
    parser.add_argument(
        "--sandbox",
        action="store_true",
        default=argparse.SUPPRESS if after_command else False,
        help="use an embedded local sandbox instead of the API: no Kling key, no credits spent",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        dest="verbose_after" if after_command else "verbose",  # added up in main()
        default=argparse.SUPPRESS if after_command else 0,
        help="log to stderr, and show tracebacks (-vv for debug)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling3",
        description="Make videos with Kling 3.0 and Kling Video O3.",
        epilog=(
            "Configuration: KLING_API_KEY, KLING_BASE_URL, KLING_CONFIG (a TOML file like config.example.toml). "
            "Try it with no key: kling3 --sandbox generate 'a red fox in the snow' --wait"
        ),
    )
    parser.add_argument("--version", action="version", version=f"kling3-tools {__version__}")
    _add_common_flags(parser, after_command=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _add_common_flags(common, after_command=True)
    commands.add_parser = functools.partial(commands.add_parser, parents=[common])  # type: ignore[method-assign]

    generate = commands.add_parser("generate", help="submit a video task (spends credits)")
    what = GenerateRequest.model_fields["prompt"].description
    _add_request_flags(generate, prompt_help=f"{what} Every type takes one but lip-sync; motion control and native "
                       "multi-shot (--shot) may go without")  # fmt: skip
    generate.add_argument("-w", "--wait", action="store_true", help="wait for the video and print its URL")
    generate.add_argument(
        "--notify-webhook",
        metavar="URL",
        help="record the task and return at once; a running `kling3 poller` POSTs the signed result here",
    )
    _add_wait_flags(generate)

    extend = commands.add_parser("extend", help="the next shot of a finished video of yours (spends credits)")
    extend.add_argument("source_task", metavar="TASK_ID", help="the finished video to go on from")
    extend.add_argument("prompt", help="what happens next")
    extend.add_argument(
        "-t", "--type", choices=types_of(catalog.Mode.EXTEND), default=types_of(catalog.Mode.EXTEND)[-1]
    )
    extend.add_argument("-d", "--duration", type=_whole_number, help="seconds of the new shot (default 5)")
    lipsync = commands.add_parser("lipsync", help="make a finished video's speaker say something (spends credits)")
    lipsync.add_argument("source_task", metavar="TASK_ID", help="the finished video, with a face in it")
    said = lipsync.add_mutually_exclusive_group(required=True)
    said.add_argument("--text", help=GenerateRequest.model_fields["text"].description)
    said.add_argument("--audio", metavar="URL|PATH", help=GenerateRequest.model_fields["audio"].description)
    lipsync.add_argument("--voice", metavar="ID", help=GenerateRequest.model_fields["voice"].description)
    for making in (extend, lipsync):
        making.add_argument("-w", "--wait", action="store_true", help="wait for the video and print its URL")
        making.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
        making.add_argument("--notify-webhook", metavar="URL", help="as for generate")
        _add_wait_flags(making)

    character = commands.add_parser("character", help="characters to place in videos by name (Kling's elements)")
    character_commands = character.add_subparsers(dest="character_command", required=True, metavar="ACTION")
    create = character_commands.add_parser("create", parents=[common], help="make a character from 2-4 images")
    create.add_argument("name", help="how videos name it (at most 20 letters, digits, spaces, - and _)")
    create.add_argument("--image", action="append", required=True, metavar="URL|PATH", help="repeatable; the "
                        "first from the front")  # fmt: skip
    create.add_argument("--description", default="", help="what it is, in a few words")
    character_list = character_commands.add_parser("list", parents=[common], help="your characters")
    delete = character_commands.add_parser(
        "delete", parents=[common], help="forget a character (and delete it at Kling)"
    )
    delete.add_argument("name")
    for action in (create, character_list):
        action.add_argument("--json", action="store_true", help="print one JSON object")

    person = commands.add_parser(
        "person",
        help="one person's own limits over MCP ([mcp.auth]): show them, or set them for every replica",
        description="Show a person's limits and what they spent today; with a flag, set theirs (kept in the "
        "store, over [mcp] people and the *_per_user ones; -1 unsets one, --clear all of them).",
    )
    person.add_argument("subject", help="the subject (`sub`) the authorization server names them with")
    person.add_argument("--daily-credit-budget-per-user", type=int, metavar="N")
    person.add_argument("--max-concurrent-tasks-per-user", type=int, metavar="N")
    person.add_argument("--cooldown-seconds", type=float, metavar="S")
    person.add_argument("--clear", action="store_true", help="forget what was set here for them")
    person.add_argument("--json", action="store_true", help="print one JSON object")

    status = commands.add_parser("status", help="show a task's status")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true", help="print one JSON object")

    wait = commands.add_parser("wait", help="wait for a task to finish and print its video URL")
    wait.add_argument("task_id")
    wait.add_argument("--json", action="store_true", help="print one JSON object")
    _add_wait_flags(wait)

    cost = commands.add_parser("cost", help="show what a request would cost (spends nothing)")
    _add_request_flags(cost, prompt_help="optional; with it, the whole request is checked")

    tasks = commands.add_parser(
        "tasks", help="list the tasks recorded in the store, and the generates whose outcome is unknown"
    )
    tasks.add_argument("--status", choices=get_args(StatusFilter), help="only these")
    tasks.add_argument("--limit", type=int, default=20, help="how many, newest first (default 20)")
    tasks.add_argument("--json", action="store_true", help="print one JSON object")
    tasks.add_argument(
        "--refresh-urls", action="store_true", help="sign fresh URLs for the archived videos listed ([storage])"
    )
    tasks_commands = tasks.add_subparsers(dest="tasks_command", metavar="ACTION")
    resolve = tasks_commands.add_parser(
        "resolve",
        parents=[common],
        help="settle a generate whose outcome is unknown, once you have checked the dashboard",
        description="Attach the task the dashboard shows to an unknown attempt (then it is followed like any "
        "task), or release it when nothing was created (then it no longer counts against your limits).",
    )
    resolve.add_argument("attempt_id", help="the attempt-… id that `kling3 tasks` lists")
    outcome = resolve.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--task-id", metavar="ID", help="the task the dashboard shows for it")
    outcome.add_argument("--release", action="store_true", help="nothing was created: stop counting it")

    story = commands.add_parser("story", help="many shots chained and cut into one film (see the README)")
    story_commands = story.add_subparsers(dest="story_command", required=True, metavar="ACTION")
    story_plan = story_commands.add_parser(
        "plan", parents=[common], help="check a story file, show its order and total cost; spends nothing"
    )
    story_plan.add_argument("file", help="the story (TOML)")
    story_plan.add_argument("--json", action="store_true", help="print one JSON object")
    story_run = story_commands.add_parser(
        "run",
        parents=[common],
        help="reserve the whole story's cost at once, then run it (spends credits)",
        description="Reserve every shot's credits at once (all or nothing), then submit each shot as soon as its "
        "inputs exist. A running `kling3 poller` advances it, or this command with --wait.",
    )
    story_run.add_argument("file", help="the story (TOML)")
    story_run.add_argument("--out", metavar="PATH", help="write the film here (default: the data folder's films/)")
    story_run.add_argument("--notify-webhook", metavar="URL", help="POST story.succeeded / story.failed here")
    story_status = story_commands.add_parser("status", parents=[common], help="where a story stands, shot by shot")
    story_status.add_argument("story_id")
    story_retry = story_commands.add_parser(
        "retry", parents=[common], help="run a failed shot again, and what needs it (spends credits)"
    )
    story_retry.add_argument("story_id")
    story_retry.add_argument("--shot", required=True, metavar="ID", help="the shot to run again")
    for command in (story_run, story_status, story_retry):
        command.add_argument("--wait", action="store_true", help="advance the story here until its film is made")
        command.add_argument(
            "--timeout", type=float, default=3600, metavar="SECONDS", help="give up waiting after this"
        )
        command.add_argument("--json", action="store_true", help="print one JSON object")
    story_list = story_commands.add_parser("list", parents=[common], help="recent stories")
    story_list.add_argument("--limit", type=int, default=20, metavar="N")
    story_list.add_argument("--json", action="store_true", help="print one JSON array")

    poller = commands.add_parser(
        "poller",
        help="follow every recorded task and deliver results (webhooks, Discord); runs until Ctrl-C",
        description=(
            "Follow every task in the store and deliver each result to where it was asked for: webhooks, and "
            "Discord channels when DISCORD_TOKEN is set (over REST; no gateway connection). Any number of pollers "
            "may share one store; with PostgreSQL they may run on many machines."
        ),
    )
    poller.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes and restart any that dies (default 1); "
        "on SQLite they split the rate limit, on PostgreSQL they share it",
    )

    store = commands.add_parser("store", help="manage the task store")
    store_commands = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    store_commands.add_parser(
        "migrate",
        parents=[common],
        help="create or upgrade the schema of the configured store (PostgreSQL); safe to run again",
    )
    stats = store_commands.add_parser(
        "stats",
        parents=[common],
        help="tasks by state, the due backlog, and how many videos the request budget can follow",
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    prune = store_commands.add_parser(
        "prune",
        parents=[common],
        help="delete delivered tasks and settled ledger attempts older than this; never an open attempt",
    )
    prune.add_argument("--older-than", required=True, type=_days, metavar="DAYS", help="e.g. 90 or 90d (at least 1)")

    from ..mcp import add_arguments as add_mcp_arguments

    mcp = commands.add_parser("mcp", help="run the MCP server for AI assistants (needs the mcp extra)")
    add_mcp_arguments(mcp, with_common=False)

    commands.add_parser("discord", help="run the Discord bot (needs the discord extra and DISCORD_TOKEN)")

    models = commands.add_parser("models", help="list the task types, their limits and prices")
    models.add_argument("--json", action="store_true", help="print one JSON object")

    sandbox = commands.add_parser("sandbox", help="run the local Kling-compatible sandbox server")
    sandbox.add_argument("--host", help="default 127.0.0.1")
    sandbox.add_argument("--port", type=int, help="default 8765")
    sandbox.add_argument("--finish-seconds", type=float, help="how long each task runs (default 6)")
    sandbox.add_argument("--failure-rate", type=float, help="share of tasks that fail, 0-1")
    sandbox.add_argument("--error-rate", type=float, help="share of requests answered 500, 0-1")
    sandbox.add_argument("--rate-limit", type=float, help="API requests per second before 429s (0 = off)")
    return parser
