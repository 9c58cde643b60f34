"""People's own limits over MCP: an operator's (kept in the store, on both backends) over `[mcp] people` over the
`*_per_user` ones, each limit on its own."""

from __future__ import annotations

from kling3_tools import Settings
from kling3_tools.adapters.store import open_store


def test_an_operators_limit_stands_over_the_configs_each_alone():
    mcp = Settings.load(
        mcp={"daily_credit_budget_per_user": 600, "cooldown_seconds": 5, "people": {"bob": {"cooldown_seconds": 1}}}
    ).mcp
    assert mcp.person_limits("carol") == (600, 0, 5.0)
    assert mcp.person_limits("bob") == (600, 0, 1.0)
    assert mcp.person_limits("bob", {"daily_credit_budget_per_user": 0, "cooldown_seconds": None}) == (0, 0, 1.0)
    assert mcp.person_limits(None, {"max_concurrent_tasks_per_user": 3}) == (600, 3, 5.0)


async def test_sqlite_keeps_an_operators_limits(tmp_path):
    await limits_kept(f"sqlite:///{tmp_path / 'p.db'}")


async def test_postgres_keeps_an_operators_limits(postgres_url):
    await limits_kept(postgres_url)


async def limits_kept(url: str) -> None:
    store = await open_store(url)
    try:
        await store.set_person_limits("auth0|alice", {"daily_credit_budget_per_user": 900})
        await store.set_person_limits("auth0|alice", {"cooldown_seconds": 2.5})  # the other one is kept
        await store.set_person_limits("bob'; DROP TABLE person_limits; --", {"max_concurrent_tasks_per_user": 1})
        alice = (await store.person_limits("auth0|alice"))["auth0|alice"]
        assert alice == {
            "daily_credit_budget_per_user": 900,
            "max_concurrent_tasks_per_user": None,
            "cooldown_seconds": 2.5,
        }
        await store.set_person_limits("auth0|alice", {"daily_credit_budget_per_user": None})
        assert (await store.person_limits("auth0|alice"))["auth0|alice"]["daily_credit_budget_per_user"] is None
        assert len(await store.person_limits()) == 2
        assert await store.clear_person_limits("auth0|alice")
        assert list(await store.person_limits()) == ["bob'; DROP TABLE person_limits; --"]
    finally:
        await store.close()
