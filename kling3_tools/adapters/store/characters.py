"""The characters table, the same SQL on both backends: one row per owner and name (names differ in more than
case), with the provider's id."""

from __future__ import annotations

import json
from typing import Any

from ...domain.characters import Character
from .rows import Statements

SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS characters (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    description TEXT NOT NULL,
    images TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, name)
);
CREATE UNIQUE INDEX IF NOT EXISTS characters_named ON characters (owner, lower(name));
"""
COLUMNS = ("owner", "name", "provider", "provider_id", "description", "images", "created_at")


def _from_row(row: dict[str, Any]) -> Character:
    images = row["images"]
    return Character.model_validate(row | {"images": json.loads(images) if isinstance(images, str) else images})


class CharacterTable(Statements):
    async def add_character(self, character: Character) -> bool:
        """Keep a new character; False when its owner has one of that name already (nothing changed)."""
        p, as_json = self._dialect.param, self._dialect.json
        row = character.model_dump() | {"images": json.dumps(character.images)}
        values = ", ".join(as_json(c) if c == "images" else p(c) for c in COLUMNS)
        sql = f"INSERT INTO characters ({', '.join(COLUMNS)}) VALUES ({values}) ON CONFLICT DO NOTHING"
        return bool(await self._write(sql, row))

    async def characters(self, owner: str, *, name: str | None = None) -> list[Character]:
        """An owner's characters by name (or the one named `name`, in any case)."""
        p = self._dialect.param
        where = f"owner = {p('owner')}" + (f" AND lower(name) = lower({p('name')})" if name is not None else "")
        rows = await self._fetch(
            f"SELECT * FROM characters WHERE {where} ORDER BY name", {"owner": owner, "name": name}
        )
        return [_from_row(row) for row in rows]

    async def delete_character(self, owner: str, name: str) -> bool:
        p = self._dialect.param
        sql = f"DELETE FROM characters WHERE owner = {p('owner')} AND lower(name) = lower({p('name')})"
        return bool(await self._write(sql, {"owner": owner, "name": name}))
