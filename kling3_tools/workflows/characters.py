"""Making, listing and deleting characters. Making one is a provider task (its images checked and sent inline or
uploaded first, then followed until the provider names the character); only then is it kept, for its owner."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from functools import partial
from pathlib import Path

from ..adapters.assets import inputs
from ..adapters.assets.inputs import LocalFiles
from ..adapters.assets.store import AssetStore
from ..adapters.client import AsyncKlingClient
from ..adapters.providers import Call
from ..adapters.providers.base import CharacterCalls
from ..adapters.store import TaskStore
from ..domain.characters import Character, NewCharacter
from ..domain.errors import APIError, KlingError, RequestValidationError, TaskNotFoundError
from ..domain.url_fields import with_urls

MAKING_SECONDS = 180.0  # how long making a character is waited for
CHECK_EVERY = 2.0


class Characters:
    def __init__(self, client: AsyncKlingClient, store: TaskStore, assets: AssetStore | None) -> None:
        self.client, self.store, self.assets = client, store, assets

    @property
    def provider(self) -> str:
        return self.client.provider.name

    async def create(
        self,
        owner: str,
        name: str,
        images: list[str | Path | bytes],
        description: str = "",
        *,
        files: LocalFiles = inputs.ANY_PATH,
        timeout: float = MAKING_SECONDS,
        check_every: float = CHECK_EVERY,
    ) -> Character:
        """Make a character from 2-4 images (the first from the front) and keep it as `owner`'s `name`."""
        self.client.provider.character_calls()  # refused here, before anything is read, where there are none
        wanted = NewCharacter.build(name=name, images=[_stand_in(i) for i in images], description=description)
        if await self.store.characters(owner, name=wanted.name):
            raise RequestValidationError([f"you have a character named {wanted.name!r} already"])
        sent = await self._inputs(images, files)
        self.client.require_key()
        made = await self.client.character(
            lambda calls: calls.create(wanted.name, wanted.description, sent, attempt_id=uuid.uuid4().hex),
            safe_after_send=False,
        )
        deadline = time.monotonic() + timeout
        while not made.status.is_terminal:
            if time.monotonic() > deadline:
                raise APIError(
                    f"The character {wanted.name!r} was not made within {timeout:g} s (task {made.task_id})."
                )
            await asyncio.sleep(check_every)
            made = await self.client.character(partial(_read, made.task_id), safe_after_send=True)
        if made.provider_id is None:
            raise APIError(f"The character {wanted.name!r} was not made: {made.error_message or 'no reason given'}.")
        character = Character(
            owner=owner,
            name=wanted.name,
            provider=self.provider,
            provider_id=made.provider_id,
            description=wanted.description,
            images=[i for i in sent if i.startswith(("http://", "https://"))],
        )
        if not await self.store.add_character(character):  # made meanwhile by another call: ours goes
            with contextlib.suppress(KlingError):
                await self.client.character(lambda calls: calls.delete(character.provider_id), safe_after_send=True)
            raise RequestValidationError([f"you have a character named {wanted.name!r} already"])
        return character

    async def of(self, owner: str) -> list[Character]:
        return await self.store.characters(owner)

    async def delete(self, owner: str, name: str) -> Character:
        """Forget `owner`'s character `name`, deleting it at the provider first (one it no longer knows is fine)."""
        found = await self.store.characters(owner, name=name)
        if not found:
            raise RequestValidationError([f"you have no character named {name[:40]!r}"])
        character = found[0]
        if character.provider == self.provider:
            with contextlib.suppress(TaskNotFoundError):  # gone there already
                await self.client.character(lambda calls: calls.delete(character.provider_id), safe_after_send=True)
        await self.store.delete_character(owner, character.name)
        return character

    async def _inputs(self, images: list[str | Path | bytes], files: LocalFiles) -> list[str]:
        """Each image as the provider takes it: a URL as given, a local one checked (as a request's are), then
        inline (base64) where the provider takes that, else uploaded to the asset store."""
        fields = {"images": images}
        _, checked, problems = inputs.checked_local(fields, files)
        inline = self.client.provider.inline_images
        if not inline and self.assets is None:
            problems += [f"`{entry.label}`: {inputs.STORAGE_NEEDED}" for entry, _ in checked]
        if problems:
            raise RequestValidationError(problems)
        return list(with_urls(fields, await inputs.sent(checked, None if inline else self.assets))["images"])


def _read(task_id: str, calls: CharacterCalls) -> Call:
    return calls.status(task_id)


def _stand_in(image: str | Path | bytes) -> str:
    """What the name and count checks see for an image not yet read."""
    return image if isinstance(image, str) and image.startswith(("http://", "https://")) else "https://local.invalid/i"
