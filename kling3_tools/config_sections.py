"""The settings of the front ends that serve people (`[mcp]`, `[mcp.auth]`, `[discord]`), and what every section
shares; `config` gathers them with the rest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator


def _empty_is_unset(value: Any) -> Any:
    """`KLING_…_SECRET=` (as compose passes an unset variable) means no secret, never an empty one."""
    return value or None


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class McpAuthSettings(_Section):
    """`[mcp.auth]`: the HTTP transport as an OAuth 2.1 resource server (each person signs in at `issuer`)."""

    issuer: str = ""  # the authorization server; its metadata is found by RFC 8414 or OpenID discovery
    resource: str = ""  # this server's canonical URL (https://…/mcp): the audience tokens must carry
    introspection_url: str = ""  # RFC 7662, for opaque tokens; JWTs are checked against the issuer's keys
    client_id: str = ""  # what this server introspects as
    client_secret: SecretStr | None = None
    read_scope: str = "kling3:read"  # status, lists, estimates: every request needs it
    generate_scope: str = "kling3:generate"  # and anything that spends or changes something

    _no_empty_secret = field_validator("client_secret", mode="before")(_empty_is_unset)

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)

    @model_validator(mode="after")
    def _complete(self) -> McpAuthSettings:
        urls = {"issuer": self.issuer, "resource": self.resource, "introspection_url": self.introspection_url}
        for name, url in urls.items():
            if url and not url.startswith(("https://", "http://")):
                raise ValueError(f"{name} must be an http(s) URL")
        if self.issuer and not self.resource:
            raise ValueError("issuer needs resource: this server's canonical URL, the audience tokens carry")
        if self.introspection_url and not self.client_id:
            raise ValueError("introspection_url needs client_id (and client_secret) to introspect as")
        return self


class PersonLimits(_Section):
    """`[mcp.people.<subject>]`: one person's own limits, over `[mcp]`'s per-person ones."""

    daily_credit_budget_per_user: int | None = Field(default=None, ge=0)
    max_concurrent_tasks_per_user: int | None = Field(default=None, ge=0)
    cooldown_seconds: float | None = Field(default=None, ge=0)


class McpSettings(_Section):
    wait_seconds: float = Field(default=45.0, ge=0, le=55)
    max_credits_per_video: int = Field(default=0, ge=0)
    daily_credit_budget: int = Field(default=0, ge=0)
    confirm_above_credits: int = Field(default=0, ge=0)
    when_cannot_confirm: Literal["refuse", "allow"] = "refuse"
    http_token: SecretStr | None = None
    http_tokens: list[SecretStr] = Field(default_factory=list)
    share_tasks: bool = False
    player_media_hosts: list[str] = Field(default_factory=list)  # more hosts the in-chat player may play from
    # Each HTTP caller's own limits (a person signed in with [mcp.auth], or a token of http_tokens); 0: none.
    daily_credit_budget_per_user: int = Field(default=0, ge=0)
    max_concurrent_tasks_per_user: int = Field(default=0, ge=0)
    cooldown_seconds: float = Field(default=0.0, ge=0)
    people: dict[str, PersonLimits] = Field(default_factory=dict)  # by the subject the issuer names them with
    auth: McpAuthSettings = Field(default_factory=McpAuthSettings)

    def person_limits(self, subject: str | None, operators: Mapping[str, Any] | None = None) -> tuple[int, int, float]:
        """(daily credits, running at once, cooldown seconds) for the person `subject` names: an operator's
        (`kling3 person`, `operators`) over theirs in `people` over the `*_per_user` ones; each limit alone."""
        layers = [PersonLimits.model_validate(operators or {}), self.people.get(subject or "") or PersonLimits()]
        values = [
            next((value for layer in layers if (value := getattr(layer, name)) is not None), getattr(self, name))
            for name in ("daily_credit_budget_per_user", "max_concurrent_tasks_per_user", "cooldown_seconds")
        ]
        return int(values[0]), int(values[1]), float(values[2])

    _no_empty_token = field_validator("http_token", mode="before")(_empty_is_unset)

    @property
    def bearer_tokens(self) -> list[str]:
        """Every token the HTTP transport accepts; each is one client identity."""
        tokens = [self.http_token, *self.http_tokens] if self.http_token else self.http_tokens
        return [token.get_secret_value() for token in tokens if token.get_secret_value()]


class DiscordSettings(_Section):
    guild_ids: list[int] = Field(default_factory=list)
    channel_ids: list[int] = Field(default_factory=list)
    allow_dms: bool = False
    sync_guild_ids: list[int] = Field(default_factory=list)
    confirm_above_credits: int = Field(default=0, ge=0)
    daily_credit_budget_per_user: int = Field(default=0, ge=0)
    max_concurrent_tasks_per_user: int = Field(default=2, ge=0)
    cooldown_seconds: float = Field(default=30.0, ge=0)
    admin_role: str = ""
    max_attachment_mb: float = Field(default=20.0, gt=0)
    attach_videos_up_to_mb: float = Field(default=25.0, ge=0)
    shard_count: int = Field(default=0, ge=0)
    shard_ids: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shards_need_a_count(self) -> DiscordSettings:
        if self.shard_ids and not self.shard_count:
            raise ValueError("shard_ids needs shard_count (the total across every bot process)")
        if any(i >= self.shard_count for i in self.shard_ids):
            raise ValueError("every shard id must be below shard_count")
        return self
