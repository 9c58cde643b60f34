"""Where the settings come from, beside flags and defaults: the config file, `KLING_…` variables and secrets
mounted as files; and the one-line error of reading them."""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path

import platformdirs
from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource

APP_NAME = "kling3"
config_file_in_use: ContextVar[Path | None] = ContextVar("kling3_config_file", default=None)


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The config file in use: the explicit one, `$KLING_CONFIG`, or the default when it exists."""
    if explicit:
        return Path(explicit).expanduser()
    if env := os.environ.get("KLING_CONFIG"):
        return Path(env).expanduser()
    default = default_config_path()
    return default if default.is_file() else None


class ConfigError(ValueError):
    """The settings are invalid: one line per problem, naming the key, never the value (it may be a secret)."""

    @classmethod
    def from_validation(cls, exc: ValidationError, path: Path | None) -> ConfigError:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: "
            + error["msg"].removeprefix("Value error, ")
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        where = f" ({path})" if path is not None else ""
        return cls(f"invalid configuration{where}: " + "; ".join(problems))


def read_secret_file(variable: str, path: str) -> str:
    """A secret mounted as a file (Docker `secrets:`, a Kubernetes Secret volume): its content, stripped."""
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def discord_token() -> str:
    """The bot's token: DISCORD_TOKEN, else the file DISCORD_TOKEN_FILE names (as for `KLING_…_FILE`); empty
    when neither is set."""
    if token := os.environ.get("DISCORD_TOKEN", "").strip():
        return token
    path = os.environ.get("DISCORD_TOKEN_FILE")
    return read_secret_file("DISCORD_TOKEN_FILE", path) if path else ""


class EnvironmentSource(EnvSettingsSource):
    """The `KLING_…` variables, but for the `KLING_…_FILE` ones, which `SecretFilesSource` reads, and for an
    empty one whose `_FILE` twin is set (compose passes an unset variable as empty: the file then counts)."""

    def _load_env_vars(self) -> dict[str, str | None]:
        found = super()._load_env_vars()
        return {
            name: value
            for name, value in found.items()
            if not name.endswith("_file") and (value or not found.get(f"{name}_file"))
        }


class SecretFilesSource(EnvSettingsSource):
    """`KLING_<KEY>_FILE=path` sets `KLING_<KEY>` to that file's content (`KLING_API_KEY_FILE`,
    `KLING_STORE__PASSWORD_FILE`…), so a secret mounted as a file never sits in the environment. A non-empty
    `KLING_<KEY>` wins over its file."""

    def _load_env_vars(self) -> dict[str, str | None]:
        return {
            name.lower().removesuffix("_file"): read_secret_file(name, path)
            for name, path in os.environ.items()
            if name.upper().startswith("KLING_") and name.upper().endswith("_FILE") and path
        }
