"""The commands that build on videos made here, and the characters placed in new ones: extend, lipsync, character."""

from __future__ import annotations

import argparse

from ..config import Settings
from ..domain.catalog import TaskType
from ..domain.records import LOCAL_OWNER
from ..launch import EXIT_OK
from .commands import open_service, submit_fields
from .output import err, out, print_json


async def cmd_extend(args: argparse.Namespace, settings: Settings) -> int:
    fields = {"type": args.type, "prompt": args.prompt, "duration": args.duration, "source_task": args.source_task}
    return await submit_fields(args, settings, fields)


async def cmd_lipsync(args: argparse.Namespace, settings: Settings) -> int:
    fields = {"type": TaskType.LIP_SYNC.value, "source_task": args.source_task}
    return await submit_fields(args, settings, fields | {"text": args.text, "voice": args.voice, "audio": args.audio})


async def cmd_character(args: argparse.Namespace, settings: Settings) -> int:
    async with open_service(args, settings) as service:
        characters = service.characters
        if args.character_command == "create":
            service.require_key()
            err.print(f"Making {args.name!r} from {len(args.image)} images (about a minute)…")
            made = await characters.create(LOCAL_OWNER, args.name, args.image, args.description)
            shown = [made]
        elif args.character_command == "delete":
            gone = await characters.delete(LOCAL_OWNER, args.name)
            err.print(f"Deleted {gone.name!r}.")
            return EXIT_OK
        else:
            shown = await characters.of(LOCAL_OWNER)
    if args.json:
        print_json({"characters": [c.model_dump(mode="json", exclude={"owner"}) for c in shown]})
    elif not shown:
        err.print("No characters yet: kling3 character create NAME --image FRONT --image SIDE")
    for character in shown if not args.json else []:
        out.print(f"{character.name}\t{character.provider}:{character.provider_id}\t{character.description}")
    return EXIT_OK
