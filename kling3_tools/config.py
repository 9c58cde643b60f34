"""Settings from flags, the environment, a TOML file and defaults, in that order of precedence.

The file is `--config PATH`, else `$KLING_CONFIG`, else `config.toml` in the
user's config folder when it exists. Environment variables are `KLING_<KEY>`
for top-level keys (`KLING_API_KEY`, `KLING_BASE_URL`) and
`KLING_<SECTION>__<KEY>` for sections (`KLING_POLLER__RATE_LIMIT_PER_SECOND`).
`config.example.toml` documents every key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from .adapters.providers import PROVIDERS
from .adapters.sandbox.options import SandboxOptions
from .config_sections import DiscordSettings, McpSettings, _empty_is_unset, _Section
from .config_sources import ConfigError, EnvironmentSource, SecretFilesSource, config_file_in_use, config_path
from .domain.catalog import DEFAULT_BASE_URL, MAX_RETRY_AFTER, Price, Prices, TaskType, get_model


def known_store_url(url: str) -> str:
    """A store URL of a kind the stores open: a SQLite file (`sqlite:///…` or a plain path) or PostgreSQL."""
    if "://" in url and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        scheme = url.split("://", 1)[0][:20]  # never the rest, where a password may be
        raise ValueError(f"unsupported store url ({scheme}://…): use sqlite:///path/to/tasks.db or postgresql://…")
    if url.removeprefix("sqlite:///").strip() == "" and url != "":
        raise ValueError("names no file: use sqlite:///path/to/tasks.db (or leave it empty for the default)")
    return url


class SandboxSettings(SandboxOptions):
    """`[sandbox]`: where `kling3 sandbox` listens, and the knobs of every sandbox."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)


class StoreSettings(_Section):
    url: str = ""
    password: SecretStr | None = None  # PostgreSQL's, kept out of the URL (where `@` or `:` would break it)
    pool_size: int = Field(default=10, ge=1)
    busy_timeout_seconds: float = Field(default=30.0, gt=0)
    keep_days: float = Field(default=0, ge=0)  # 0: keep everything

    _no_empty_password = field_validator("password", mode="before")(_empty_is_unset)
    _known_url = field_validator("url")(known_store_url)

    @field_validator("keep_days")
    @classmethod
    def _at_least_a_day(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("must be 0 (keep everything) or at least 1 day: the budgets look back 24 hours")
        return value


class StorageSettings(_Section):
    """`[storage]`: a bucket for local files and (with `archive_videos`) finished videos."""

    url: str = ""  # s3://bucket/prefix (R2, MinIO, B2: s3:// with `endpoint`), gs://bucket/prefix, az://container
    endpoint: str = ""
    region: str = ""
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    public_base_url: str = ""
    url_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)
    archive_videos: bool = False

    _no_empty_secrets = field_validator("access_key_id", "secret_access_key", mode="before")(_empty_is_unset)


class BudgetSettings(_Section):
    """`[budget]`: one wallet, so limits for every front end together (the CLI and the Python API too)."""

    daily_credits: int = Field(default=0, ge=0)
    max_credits_per_video: int = Field(default=0, ge=0)


class PollerSettings(_Section):
    rate_limit_per_second: float = Field(default=5.0, gt=0)
    rate_limit_burst: float = Field(default=0, ge=0)  # requests at once after idle; 0: a tenth of a second's
    rate_shared_by: int = Field(default=1, ge=1)  # set by `--workers N` on SQLite: this process sends 1/N
    concurrency: int = Field(default=8, ge=1, le=256)
    expected_seconds: tuple[float, float] = (120.0, 600.0)
    learn_schedule: bool = True
    dense_interval_seconds: float = Field(default=8.0, gt=0)
    max_interval_seconds: float = Field(default=60.0, gt=0)
    max_task_minutes: float = Field(default=30.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    stop_grace_seconds: float = Field(default=10.0, ge=0)
    max_retry_after_seconds: float = Field(default=MAX_RETRY_AFTER, gt=0)
    download: bool = False
    media_dir: str = ""
    max_download_mb: float = Field(default=500.0, gt=0)
    webhook_secret: SecretStr | None = None

    _no_empty_secret = field_validator("webhook_secret", mode="before")(_empty_is_unset)

    @property
    def own_rate(self) -> float:
        """The status checks per second this process sends: its share of `rate_limit_per_second` (which the
        capacity figures, about the whole store, keep using)."""
        return self.rate_limit_per_second / self.rate_shared_by


class PriceSetting(_Section):
    """One task type's price in the provider's unit: per second (silent, and with sound), or fixed for edits."""

    per_second: float | None = Field(default=None, ge=0)
    per_second_with_sound: float | None = Field(default=None, ge=0)
    fixed: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> PriceSetting:
        if (self.fixed is None) == (self.per_second is None):
            raise ValueError("give per_second (and per_second_with_sound), or fixed for an edit")
        return self


class _Listener(_Section):
    listen: str = ""  # host:port, e.g. 127.0.0.1:9464

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, listen: str) -> str:
        if listen:
            host, _, port = listen.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must be host:port, such as 127.0.0.1:9464 (0.0.0.0:9464 in a container)")
        return listen

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class MetricsSettings(_Listener):
    """`/healthz`, `/readyz` and Prometheus `/metrics` of a long-running process (`kling3 poller`, the bot,
    `kling3 mcp`); off while `listen` is empty."""


class CallbackSettings(_Listener):
    """Where the provider tells a long-running process that a task changed (Kling's `callback_url`): received
    on `listen`, reached by the provider at `public_url` (both or neither). A callback only wakes the task's
    poller, which reads the status itself before anything is delivered."""

    public_url: str = ""  # e.g. https://kling3.example.com (what a proxy in front of `listen` serves)

    @model_validator(mode="after")
    def _both_or_neither(self) -> CallbackSettings:
        if bool(self.public_url) != bool(self.listen):
            raise ValueError("public_url and listen go together: the provider calls public_url, which reaches listen")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url must be an http(s) URL")
        return self


class Settings(BaseSettings):
    """Everything configurable, for every front end."""

    model_config = SettingsConfigDict(
        env_prefix="KLING_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    provider: str = "kling3api"
    api_key: SecretStr | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    base_url: str = ""  # empty: the provider's own endpoint
    prices: dict[TaskType, PriceSetting] = Field(default_factory=dict)  # over the provider's, in its unit

    @field_validator("api_key", "access_key", "secret_key", mode="before")
    @classmethod
    def _no_space_around_the_key(cls, value: Any) -> Any:
        """`KLING_API_KEY="key "` or a pasted line break: never part of a key, and not valid in a header. An empty
        key is no key."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if url and (not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0):
            raise ValueError(f"must be an http(s) URL such as {DEFAULT_BASE_URL}")
        return url

    @property
    def pricing(self) -> tuple[Prices, str]:
        """The configured provider's prices (`prices` over its published ones) and their unit."""
        provider = PROVIDERS[self.provider]
        overrides = {type_: Price(**price.model_dump()) for type_, price in self.prices.items()}
        return {**provider.PRICES, **overrides}, provider.unit

    @property
    def takes_fields(self) -> frozenset[str] | None:
        """The request fields the configured provider's format has (None: every one)."""
        return PROVIDERS[self.provider].takes_fields

    @property
    def has_credentials(self) -> bool:
        """A key to authenticate with: `api_key`, or the `access_key` and `secret_key` pair (checked together)."""
        return self.api_key is not None or self.access_key is not None

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, name: str) -> str:
        if name not in PROVIDERS:
            raise ValueError(f"must be one of {', '.join(PROVIDERS)}")
        return name

    @model_validator(mode="after")
    def _key_pairs_come_whole(self) -> Settings:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key and secret_key go together: set both (KLING_ACCESS_KEY, KLING_SECRET_KEY)")
        if self.access_key is not None and self.provider != "kling":
            raise ValueError('access_key and secret_key are for provider = "kling" (KLING_PROVIDER=kling)')
        self.base_url = self.base_url or PROVIDERS[self.provider].default_base_url
        for type_, price in self.prices.items():
            if type_ not in PROVIDERS[self.provider].PRICES:  # a price does not make a type offered
                raise ValueError(f"prices.{type_}: provider {self.provider} does not offer it")
            if (price.fixed is None) != get_model(type_).has_duration:
                kind = "per_second" if get_model(type_).has_duration else "fixed (an edit keeps its source's length)"
                raise ValueError(f"prices.{type_}: give {kind}")
        return self

    timeout_seconds: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)

    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    poller: PollerSettings = Field(default_factory=PollerSettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_file_in_use.get()
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            EnvironmentSource(settings_cls),
            SecretFilesSource(settings_cls),
        ]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Read the settings; `overrides` (from flags) win over everything else."""
        path = config_path(config_file)
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        token = config_file_in_use.set(path)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError.from_validation(exc, path) from None
        except tomllib.TOMLDecodeError as exc:  # its message gives the line and column
            raise ConfigError(f"invalid configuration ({path}): not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"invalid configuration ({path}): not UTF-8 text (byte {exc.start})") from None
        except SettingsError as exc:  # a section given whole in one variable (KLING_MCP='{…') that is not JSON
            raise ConfigError(f"invalid configuration: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration {path}: {exc.strerror or exc}") from None
        finally:
            config_file_in_use.reset(token)
