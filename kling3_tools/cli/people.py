"""`kling3 person`: one person's own limits over MCP (set by an operator, kept in the store, over `[mcp]`'s), and
what they have spent today."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..domain.ledger import Scope, SpendLimit
from ..domain.records import person_number, signed_in_identity
from ..launch import EXIT_OK, UsageError
from .commands import open_service
from .output import err, out, print_json

LIMITS = ("daily_credit_budget_per_user", "max_concurrent_tasks_per_user", "cooldown_seconds")


async def cmd_person(args: argparse.Namespace, settings: Settings) -> int:
    issuer = settings.mcp.auth.issuer
    if not issuer:
        raise UsageError("people sign in with [mcp.auth]: set its issuer first")
    given = {name: getattr(args, name) for name in LIMITS if getattr(args, name) is not None}
    async with open_service(args, settings) as service:
        store = service.store
        if args.clear:
            await store.clear_person_limits(args.subject)
        if given:
            await store.set_person_limits(args.subject, {k: (None if v < 0 else v) for k, v in given.items()})
        operators = (await store.person_limits(args.subject)).get(args.subject, {})
        daily, running, cooldown = settings.mcp.person_limits(args.subject, operators)
        number = person_number(signed_in_identity(issuer, args.subject))
        usage = await service.usage(SpendLimit("mcp", Scope(origin_kind="mcp", user_id=number), daily_credits=daily))
    shown = {
        "subject": args.subject,
        "daily_credit_budget_per_user": daily,
        "max_concurrent_tasks_per_user": running,
        "cooldown_seconds": cooldown,
        "set_here": {k: v for k, v in operators.items() if v is not None},
        "spent_today": usage.credits,
    }
    if args.json:
        print_json(shown)
        return EXIT_OK
    for name, value in shown.items():
        out.print(f"{name}\t{value}")
    if given or args.clear:
        err.print("Saved; every MCP replica applies it within seconds.")
    return EXIT_OK
