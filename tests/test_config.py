import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from kling3_tools.config import Settings
from kling3_tools.config_sources import ConfigError, default_config_path

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def test_defaults():
    settings = Settings.load()
    assert settings.base_url == "https://kling3api.com"
    assert settings.api_key is None
    assert settings.poller.rate_limit_per_second == 5


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path, monkeypatch):
    config = tmp_path / "k.toml"
    config.write_text('base_url = "http://file"\ntimeout_seconds = 5\nmax_retries = 1\n[poller]\nlease_seconds = 9\n')
    monkeypatch.setenv("KLING_CONFIG", str(config))
    monkeypatch.setenv("KLING_BASE_URL", "http://env")
    monkeypatch.setenv("KLING_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("KLING_POLLER__LEASE_SECONDS", "11")
    settings = Settings.load(base_url="http://flag")
    assert settings.base_url == "http://flag"
    assert settings.timeout_seconds == 7
    assert settings.max_retries == 1
    assert settings.poller.lease_seconds == 11
    assert settings.poller.rate_limit_per_second == 5


def test_explicit_file_wins_over_kling_config(tmp_path, monkeypatch):
    chosen, other = tmp_path / "a.toml", tmp_path / "b.toml"
    chosen.write_text("max_retries = 2\n")
    other.write_text("max_retries = 9\n")
    monkeypatch.setenv("KLING_CONFIG", str(other))
    assert Settings.load(chosen).max_retries == 2


def test_default_file_is_read_when_present():
    path = default_config_path()
    path.parent.mkdir(parents=True)
    path.write_text("[mcp]\nwait_seconds = 20\n")
    assert Settings.load().mcp.wait_seconds == 20


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        Settings.load(tmp_path / "nope.toml")


def test_unknown_key_is_an_error(tmp_path):
    config = tmp_path / "k.toml"
    config.write_text("[poller]\nrate_limit = 3\n")
    with pytest.raises(ValueError, match="rate_limit"):
        Settings.load(config)


def test_key_is_secret(monkeypatch):
    monkeypatch.setenv("KLING_API_KEY", "sk-abc-secret")
    settings = Settings.load()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk-abc-secret"
    assert "sk-abc-secret" not in repr(settings) and "sk-abc-secret" not in str(settings)


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def _commented_keys(text: str) -> set[str]:
    keys, section = set(), ""
    for line in text.splitlines():
        stripped = line.lstrip("# ").strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1] + "."
        elif "=" in stripped and not stripped.startswith(("Examples", "Precedence")):
            name = stripped.split("=")[0].strip()
            if name.isidentifier():
                keys.add(section + name)
    return keys


def test_example_documents_every_key_and_loads():
    text = EXAMPLE.read_text()
    assert _commented_keys(text) == _keys(Settings)
    Settings.load(EXAMPLE)  # every key in it is known and valid
    assert tomllib.loads(text)["sandbox"]["api_key"] == "sandbox-key"


def test_shard_ids_need_a_shard_count_that_covers_them():
    assert Settings.load(discord={"shard_count": 4, "shard_ids": [2, 3]}).discord.shard_ids == [2, 3]
    with pytest.raises(ConfigError, match="needs shard_count"):
        Settings.load(discord={"shard_ids": [0]})
    with pytest.raises(ConfigError, match="below shard_count"):
        Settings.load(discord={"shard_count": 2, "shard_ids": [2]})


def test_an_empty_secret_from_the_environment_means_none(monkeypatch):
    monkeypatch.setenv("KLING_POLLER__WEBHOOK_SECRET", "")
    monkeypatch.setenv("KLING_MCP__HTTP_TOKEN", "")
    settings = Settings.load()
    assert settings.poller.webhook_secret is None and settings.mcp.http_token is None


async def test_poller_concurrency_comes_from_the_settings(sandbox, tmp_path):
    from kling3_tools.service import KlingService

    settings = Settings.load(
        api_key=sandbox.api_key, base_url=sandbox.url, store={"url": f"sqlite:///{tmp_path / 't.db'}"},
        poller={"concurrency": 3},
    )  # fmt: skip
    async with KlingService.open(settings) as service:
        assert service.poller().concurrency == 3
        assert service.poller(concurrency=5).concurrency == 5
    with pytest.raises(ConfigError, match="concurrency"):
        Settings.load(poller={"concurrency": 0})


def test_settings_read_secrets_from_the_files_their_variables_name(tmp_path, monkeypatch):
    (tmp_path / "key").write_text("sk-from-a-file\n")
    (tmp_path / "password").write_text("p@ss:w/rd?")
    monkeypatch.setenv("KLING_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("KLING_STORE__PASSWORD_FILE", str(tmp_path / "password"))
    settings = Settings.load()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk-from-a-file"
    assert settings.store.password is not None and settings.store.password.get_secret_value() == "p@ss:w/rd?"
    monkeypatch.setenv("KLING_API_KEY", "sk-from-the-environment")  # the variable itself wins over its file
    assert Settings.load().api_key.get_secret_value() == "sk-from-the-environment"  # type: ignore[union-attr]


def test_an_unreadable_secret_file_names_the_variable_never_a_value(tmp_path, monkeypatch):
    monkeypatch.setenv("KLING_POLLER__WEBHOOK_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"KLING_POLLER__WEBHOOK_SECRET_FILE: cannot read .*missing"):
        Settings.load()


def test_an_empty_variable_leaves_its_secret_file_in_charge(tmp_path, monkeypatch):
    """Compose passes an unset variable as empty: `KLING_X=` beside `KLING_X_FILE` must not blank the secret."""
    (tmp_path / "secret").write_text("from-the-file")
    for name in ("KLING_API_KEY", "KLING_POLLER__WEBHOOK_SECRET", "DISCORD_TOKEN"):
        monkeypatch.setenv(name, "")
        monkeypatch.setenv(f"{name}_FILE", str(tmp_path / "secret"))
    settings = Settings.load()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-the-file"
    assert settings.poller.webhook_secret is not None
    assert settings.poller.webhook_secret.get_secret_value() == "from-the-file"
    from kling3_tools.config_sources import discord_token

    assert discord_token() == "from-the-file"
    monkeypatch.setenv("DISCORD_TOKEN", "from-the-variable")  # as for KLING_…, a set variable wins
    assert discord_token() == "from-the-variable"


@pytest.mark.parametrize(
    "url", ["mysql://kling:s3cret@db/tasks", "sqlite://relative.db", "redis://cache", "sqlite:///", "   "]
)
def test_a_store_url_no_store_opens_is_bad_configuration(url):
    """Said when the settings load (exit 2 in every front end), not at the first request that opens the store;
    never with the URL's password."""
    with pytest.raises(ConfigError, match=r"store\.url: (unsupported store url|names no file)") as refused:
        Settings.load(store={"url": url})
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("url", ["sqlite:////tmp/tasks.db", "postgresql://kling@db/kling", "postgres://db/k", "t.db"])
def test_the_store_urls_the_stores_open_are_taken(url):
    assert Settings.load(store={"url": url}).store.url == url


def test_a_price_cannot_make_a_provider_offer_a_type_it_lacks():
    with pytest.raises(ConfigError, match="provider kling3api does not offer it"):
        Settings.load(prices={"lip-sync": {"per_second": 1}})
    assert (
        Settings.load(provider="kling", prices={"lip-sync": {"per_second": 1}}).pricing[0]["lip-sync"].per_second == 1
    )
