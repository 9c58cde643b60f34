"""The commands that need no API: `cost` and `models` (the catalog only) and `sandbox` (the local server).
They import neither the HTTP client nor the store, so they start at the floor of what they use."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ..domain import catalog
from ..domain.errors import RequestValidationError
from ..domain.models import GenerateRequest
from ..domain.rules import duration_problem, quote
from ..launch import EXIT_OK, UsageError
from . import output
from .output import describe_cost, err, print_json

if TYPE_CHECKING:
    from ..config import Settings


async def cmd_cost(args: argparse.Namespace, settings: Settings) -> int:
    prices, unit = settings.pricing
    if args.prompt is not None:
        from ..service import KlingService  # a whole request is checked as `generate` checks it, files included

        request = KlingService.check(GenerateRequest.fields_of(vars(args))).request
        credits, text = request.estimated_credits(prices), describe_cost(request, prices, unit)
    else:
        if not isinstance(args.duration, int | None):
            raise RequestValidationError([duration_problem(args.duration)])
        credits = quote(args.type, args.duration, args.sound, prices)
        text = f"{credits} {unit}"
    if args.json:
        print_json({"type": args.type, "credits": credits, "unit": unit})
    else:
        output.out.print(text)
    return EXIT_OK


async def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    described = catalog.describe_models(*settings.pricing, settings.takes_fields)
    if args.json:
        print_json({"models": described})
        return EXIT_OK
    from rich.table import Column, Table

    table = Table(
        Column("type", no_wrap=True),
        Column("mode", overflow="fold"),
        "duration",
        Column("price", overflow="fold"),
        "5s with sound",
        title="Kling 3.0 and O3 task types",
    )
    rows = [
        (
            row["type"],
            row["mode"],
            "auto" if isinstance(row["duration"], str) else f"{row['duration'][0]}-{row['duration'][1]}s",
            row["price"],
            str(row["credits_default"]),
        )
        for row in described
    ]
    output.print_rows(table, rows)
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from ..adapters.sandbox.server import serve_forever

    overrides = {
        "host": args.host,
        "port": args.port,
        "finish_seconds": args.finish_seconds,
        "failure_rate": args.failure_rate,
        "error_rate": args.error_rate,
        "rate_limit_per_second": args.rate_limit,
    }
    try:
        options = settings.sandbox.model_validate(
            {**settings.sandbox.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    host, port = options.host, options.port
    keys = (  # it speaks both formats at once; say how to reach it with the configured provider
        f"KLING_PROVIDER=kling KLING_ACCESS_KEY={options.access_key} KLING_SECRET_KEY={options.secret_key}"
        if settings.provider == "kling"
        else f"KLING_API_KEY={options.api_key}"
    )
    err.print(f"Sandbox on http://{host}:{port}; use it with:\n  export KLING_BASE_URL=http://{host}:{port} {keys}")
    try:
        serve_forever(options, host, port)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another with --port)"
        ) from None
    return EXIT_OK
