"""The APIs this product speaks. A provider owns one wire format (paths, bodies, answers, error codes), how it
authenticates and what it charges; the client sends the calls it spells, and nothing above the client knows
which one is in use. Adding one touches only its module and `PROVIDERS`."""

from __future__ import annotations

from .base import CALLBACK_PATH, Call, Credentials, Provider
from .kling import Kling
from .kling3api import Kling3Api

PROVIDERS: dict[str, type[Provider]] = {provider.name: provider for provider in (Kling3Api, Kling)}

__all__ = ["CALLBACK_PATH", "PROVIDERS", "Call", "Credentials", "Kling", "Kling3Api", "Provider"]
