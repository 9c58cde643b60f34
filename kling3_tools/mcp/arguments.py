"""Tool arguments as clients send them: a number or a boolean sent as a JSON string (MCP Inspector sends `"10"`
for an `anyOf [integer, null]` field) is read as the type the tool's schema declares, here and nowhere else.
A string the schema accepts as a string is left alone, and so is anything that does not parse as the type."""

from __future__ import annotations

import json
from typing import Any

SCALAR_TYPES = {"integer", "number", "boolean"}


def declared_types(schema: dict[str, Any]) -> set[str]:
    options = schema.get("anyOf", [schema])
    return {option["type"] for option in options if isinstance(option, dict) and isinstance(option.get("type"), str)}


def fits(value: object, types: set[str]) -> bool:
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return bool(types & {"integer", "number"})
    return isinstance(value, float) and "number" in types


def as_declared(input_schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    properties = input_schema.get("properties", {})
    read = dict(arguments)
    for name, value in arguments.items():
        types = declared_types(properties.get(name, {}))
        if not isinstance(value, str) or "string" in types or not types & SCALAR_TYPES:
            continue
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        if fits(parsed, types):
            read[name] = parsed
    return read
