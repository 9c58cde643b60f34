"""Both providers against the sandbox, which speaks both formats: the same requests, the same front-end flows,
and what only Kling's own format has (tokens, its codes, the caller's own task id)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import SecretStr

from harness.helpers import SECRET, eventually, free_port
from kling3_tools import GenerateRequest, KlingService, Settings
from kling3_tools.adapters.client import AsyncKlingClient, RetryPolicy, WaitPolicy
from kling3_tools.adapters.providers import PROVIDERS, Credentials, Kling
from kling3_tools.domain import errors
from kling3_tools.domain.ledger import AttemptState
from kling3_tools.domain.records import WebhookOrigin
from kling3_tools.workflows import spending
from kling3_tools.workflows.schedule import SchedulePolicy

from .conftest import add_fault, set_options, stats
from .support import FAST, connect, server_env, text

IMAGE, END, VIDEO = "https://example.com/a.jpg", "https://example.com/b.jpg", "https://example.com/c.mp4"
REQUESTS = {  # one of each shape a provider has to spell
    "pro-text-to-video": {"prompt": "a fox", "duration": 4, "sound": False, "cfg_scale": 0.3, "aspect_ratio": "9:16"},
    "std-image-to-video": {"prompt": "a fox", "image": IMAGE, "end_image": END},
    "o3-pro-image-to-video": {"prompt": "a fox", "image": IMAGE, "end_image": END, "duration": 6},
    "o3-std-reference-to-video": {"prompt": "a fox", "images": [IMAGE, END], "video": VIDEO},
    "o3-pro-video-edit": {"prompt": "snow", "video": VIDEO, "keep_original_sound": True},
    "o3-std-text-to-video": {"prompt": "a fox", "negative_prompt": "rain"},
}
QUICK = WaitPolicy(first_interval=0.05, max_interval=0.2)
BOTH = pytest.mark.parametrize("provider", list(PROVIDERS))


def credentials(provider: str, sandbox: Any) -> dict[str, Any]:
    options = sandbox.state.options
    if provider == "kling":  # the token path: a JWT from the key pair
        return {"access_key": options.access_key, "secret_key": options.secret_key}
    return {"api_key": sandbox.api_key}


def settings(provider: str, sandbox: Any, db: Path, **extra: Any) -> Settings:
    poller = {"webhook_secret": SECRET, "lease_seconds": 2, "rate_limit_per_second": 100}
    return Settings.load(
        provider=provider,
        base_url=sandbox.url,
        store={"url": f"sqlite:///{db}"},
        poller=poller,
        **credentials(provider, sandbox),
        **extra,
    )


def client_for(provider: str, sandbox: Any) -> AsyncKlingClient:
    keys = {name: SecretStr(value) for name, value in credentials(provider, sandbox).items()}
    return AsyncKlingClient(
        provider=PROVIDERS[provider](Credentials(**keys)), base_url=sandbox.url, retry=RetryPolicy(base_delay=0.01)
    )


def sandbox_tasks(sandbox: Any) -> dict[str, Any]:
    return httpx.get(f"{sandbox.url}/sandbox/tasks").json()  # type: ignore[no-any-return]


@BOTH
async def test_every_shape_of_request_makes_the_same_video_on_either_provider(provider, sandbox, tmp_path):
    async with client_for(provider, sandbox) as client:
        for type_, fields in REQUESTS.items():
            request = GenerateRequest.build(type=type_, **fields)
            task = await client.generate(request)
            done = await client.wait(task.task_id, type_, timeout=30, policy=QUICK)
            assert done.status == "succeeded" and done.video_url, (type_, done)
            assert (await client.download(done, tmp_path / f"{type_}.mp4")).stat().st_size > 0
            assert sandbox_tasks(sandbox)[task.task_id]["type"] == type_  # the API understood what was asked
    assert stats(sandbox)["requests"]["generate"] == len(REQUESTS)


@BOTH
async def test_a_burst_through_the_ledger_never_beats_the_budget_in_the_providers_unit(provider, sandbox, tmp_path):
    request = GenerateRequest.build(type="std-text-to-video", prompt="x", duration=3, sound=False)
    price = request.estimated_credits(PROVIDERS[provider].PRICES)
    async with KlingService.open(
        settings(provider, sandbox, tmp_path / "t.db", budget={"daily_credits": price * 3})
    ) as service:
        assert service.prices == PROVIDERS[provider].PRICES
        results = await asyncio.gather(*(service.submit(request) for _ in range(10)), return_exceptions=True)
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, errors.SpendingRefusedError)]
    assert (len(made), len(refused)) == (3, 7)
    assert all(record.estimated_credits == price for record in made)


@BOTH
async def test_the_poller_delivers_a_signed_webhook_on_either_provider(provider, sandbox, receiver, tmp_path):
    async with KlingService.open(settings(provider, sandbox, tmp_path / "t.db"), schedule=FAST) as service:
        record = await service.submit(
            GenerateRequest.build(type="o3-std-text-to-video", prompt="x"), WebhookOrigin(url=receiver.url)
        )
        async with service.polling():
            await eventually(lambda: len(receiver.events) == 1, timeout=30)
    event = receiver.events[0]
    assert event["event"] == "task.succeeded" and event["task"]["task_id"] == record.task_id
    assert event["task"]["video_urls"]


@BOTH
async def test_mcp_generates_and_prices_in_the_providers_unit(provider, sandbox, tmp_path):
    env = server_env(sandbox, tmp_path, KLING_PROVIDER=provider, KLING_API_KEY="")
    env |= {f"KLING_{name.upper()}": value for name, value in credentials(provider, sandbox).items()}
    async with connect(sandbox, tmp_path, env) as client:
        cost = await client.call_tool("estimate_video_cost", {"type": "pro-text-to-video", "duration": 5})
        made = await client.call_tool(
            "generate_video", {"type": "pro-text-to-video", "prompt": "x", "wait_seconds": 20}
        )
    assert cost.structured_content["credits"] == PROVIDERS[provider].PRICES["pro-text-to-video"].credits(5, True)
    assert not made.is_error and made.structured_content["status"] == "succeeded", text(made)


# --- what only Kling's own format has -------------------------------------------------------------------


def test_the_token_is_hs256_from_the_access_key_renewed_before_it_expires(monkeypatch):
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    kling = Kling(Credentials(access_key=SecretStr("ak"), secret_key=SecretStr("s" * 32)))
    first = kling.authorization()
    assert first is not None and first.startswith("Bearer ")
    claims = jwt.decode(
        first.removeprefix("Bearer "),
        "s" * 32,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims == {"iss": "ak", "exp": 1_800_001_800, "nbf": 1_799_999_995}
    now[0] += 60
    assert kling.authorization() == first  # reused while it has long to live
    now[0] += 1500
    assert kling.authorization() != first  # renewed five minutes before it ends
    assert "ak" not in repr(kling) and "s" * 32 not in repr(kling)


def test_a_gateway_takes_a_plain_bearer_key_and_no_credentials_is_no_key():
    assert Kling(Credentials(api_key=SecretStr(" gw-key\n"))).authorization() == "Bearer gw-key"
    assert Kling(Credentials()).authorization() is None


async def test_a_wrong_secret_is_an_authentication_error_that_names_no_secret(sandbox):
    bad = Kling(Credentials(access_key=SecretStr(sandbox.state.options.access_key), secret_key=SecretStr("w" * 40)))
    async with AsyncKlingClient(provider=bad, base_url=sandbox.url) as client:
        with pytest.raises(errors.AuthenticationError) as info:
            await client.generate(GenerateRequest.build(type="std-text-to-video", prompt="x"))
    assert "w" * 40 not in str(info.value) and "1001" in str(info.value.code)
    assert "clock" in info.value.message  # a token refused may be a clock far off: say so
    assert stats(sandbox)["tasks"] == 0


@pytest.mark.parametrize(
    ("status", "error", "sent"),
    [
        (429, errors.RateLimitError, 2),  # Kling's 1302: nothing was created, so the generate is sent again
        (402, errors.InsufficientCreditsError, 1),
        (500, errors.InternalServerError, 1),  # a 5xx on generate is never resent: money is real
    ],
)
async def test_kling_codes_map_to_the_error_tree_with_the_same_retry_rules(sandbox, status, error, sent):
    add_fault(sandbox, endpoint="generate", status=status, count=1, retry_after="0")
    async with client_for("kling", sandbox) as client:
        request = GenerateRequest.build(type="std-text-to-video", prompt="x")
        if status == 429:
            assert (await client.generate(request)).task_id
        else:
            with pytest.raises(error):
                await client.generate(request)
    assert stats(sandbox)["requests"]["generate"] == sent


async def test_a_task_id_with_path_characters_is_read_at_its_own_path(sandbox):
    set_options(sandbox, task_id_template="../../x{n}?a=b#c")
    async with client_for("kling", sandbox) as client:
        task = await client.generate(GenerateRequest.build(type="std-text-to-video", prompt="x"))
        done = await client.wait(task.task_id, "std-text-to-video", timeout=30, policy=QUICK)
    assert done.task_id == task.task_id and done.status == "succeeded"


async def test_a_lost_answer_is_settled_from_the_callers_own_id_without_a_person(sandbox, tmp_path, monkeypatch):
    """The generate reaches the API but its answer is lost (the sandbox holds it past the client's deadline):
    the attempt is unknown, then a poller asks the API by the attempt id, records the task and follows it."""
    set_options(sandbox, generate_delay=1.0)
    with_deadline = settings("kling", sandbox, tmp_path / "t.db", timeout_seconds=0.3, max_retries=0)
    async with KlingService.open(with_deadline, schedule=FAST) as service:
        with pytest.raises(errors.OutcomeUnknownError) as lost:
            await service.submit(GenerateRequest.build(type="std-text-to-video", prompt="x"))
        attempt_id = lost.value.attempt_id
        assert (await service.store.get_attempt(attempt_id)).state is AttemptState.UNKNOWN
        set_options(sandbox, generate_delay=0.0)
        await eventually(lambda: sandbox_tasks(sandbox), timeout=10)  # the API did create it
        async with service.polling():
            await eventually(lambda: attempt_state(service, attempt_id, AttemptState.SUBMITTED), timeout=30)
            attempt = await service.store.get_attempt(attempt_id)
            await eventually(lambda: succeeded(service, str(attempt.task_id)), timeout=30)
    assert list(sandbox_tasks(sandbox)) == [attempt.task_id]


async def test_an_attempt_the_api_never_received_is_released_only_long_after_its_deadline(sandbox, tmp_path):
    async with KlingService.open(settings("kling", sandbox, tmp_path / "t.db")) as service:
        from kling3_tools.domain.ledger import Attempt
        from kling3_tools.domain.records import CliOrigin

        request = GenerateRequest.build(type="std-text-to-video", prompt="x")
        attempt = Attempt.new(request, api_url=service.api_url, origin=CliOrigin(), deadline=0, prices=service.prices)
        await service.store.reserve(attempt, [])
        now = attempt.expires_at + 1
        assert await service.spending.settle_unknown(now) == []  # not found yet: maybe still on its way
        later = attempt.expires_at + spending.RELEASE_UNFOUND_AFTER + 1
        assert [a.attempt_id for a in await service.spending.settle_unknown(later)] == [attempt.attempt_id]
        assert (await service.store.get_attempt(attempt.attempt_id)).state is AttemptState.RELEASED


async def attempt_state(service: KlingService, attempt_id: str, state: AttemptState) -> bool:
    found = await service.store.get_attempt(attempt_id)
    return found is not None and found.state is state


async def succeeded(service: KlingService, task_id: str) -> bool:
    record = await service.get(task_id)
    return record is not None and record.status == "succeeded"


def test_settings_refuse_half_a_key_pair_and_an_unknown_provider():
    from kling3_tools.config_sources import ConfigError

    with pytest.raises(ConfigError, match="access_key and secret_key go together"):
        Settings.load(provider="kling", access_key="a")
    with pytest.raises(ConfigError, match="provider: must be one of kling3api, kling"):
        Settings.load(provider="runway")
    assert Settings.load(provider="kling").base_url == "https://api-singapore.klingai.com"
    assert (
        json.dumps(Settings.load(provider="kling", access_key="a", secret_key="b").model_dump(mode="json")).count('"b"')
        == 0
    )


def test_the_cli_prices_in_the_configured_providers_unit(capsys, monkeypatch, tmp_path):
    from kling3_tools.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["--provider", "kling", "cost", "-t", "std-text-to-video", "-d", "5", "--no-sound"]) == 0
    units = PROVIDERS["kling"].PRICES["std-text-to-video"].credits(5, False)
    assert capsys.readouterr().out.strip() == f"{units} units"
    monkeypatch.setenv("KLING_PROVIDER", "kling3api")
    assert main(["cost", "-t", "std-text-to-video", "-d", "5", "--no-sound"]) == 0
    assert capsys.readouterr().out.strip() == "200 credits"
    assert main(["--provider", "runway", "cost"]) == 2
    assert "provider: must be one of" in capsys.readouterr().err


@BOTH
async def test_a_story_runs_and_a_generate_is_resolved_by_hand_and_listed_on_either_provider(provider, tmp_path):
    pytest.importorskip("av")
    from kling3_tools.domain.ledger import Attempt
    from kling3_tools.domain.records import CliOrigin
    from kling3_tools.domain.story import Story

    from .support import LIGHTHOUSE

    (tmp_path / "lighthouse.toml").write_text(LIGHTHOUSE)
    story = Story.from_toml(tmp_path / "lighthouse.toml")
    configured = Settings.load(
        provider=provider, store={"url": f"sqlite:///{tmp_path / 't.db'}"}, sandbox={"finish_seconds": 0.3}
    )
    async with KlingService.open(configured, sandbox=True) as service, service.polling():
        record = await service.start_story(story, film_path=str(tmp_path / "film.mp4"))
        await eventually(lambda: story_ended(service, record.story_id), timeout=60)
        ended = await service.stories.get(record.story_id)
        assert ended is not None and ended.state == "succeeded", ended.summary()

        made = await service.client.generate(GenerateRequest.build(type="std-text-to-video", prompt="x"))
        request = GenerateRequest.build(type="std-text-to-video", prompt="x")
        lost = Attempt.new(request, api_url=service.api_url, origin=CliOrigin(), deadline=0, prices=service.prices)
        await service.store.reserve(lost, [])
        resolved = await service.resolve(lost.attempt_id, task_id=made.task_id)
        assert resolved is not None and resolved.estimated_credits == request.estimated_credits(service.prices)
        listed = [r.task_id for r in await service.recent()]
    assert made.task_id in listed and len(listed) == 4  # three shots and the resolved one
    assert (tmp_path / "film.mp4").stat().st_size > 0


async def story_ended(service: KlingService, story_id: str) -> bool:
    found = await service.stories.get(story_id)
    return found is not None and found.state != "running"


# --- callbacks ---------------------------------------------------------------------------------------------

SLOW = SchedulePolicy(prior_window=(60.0, 120.0), dense_interval=30.0, max_interval=60.0, learn=False)


def with_callbacks(sandbox: Any, db: Path) -> Settings:
    address = f"127.0.0.1:{free_port()}"
    return settings("kling", sandbox, db, callbacks={"listen": address, "public_url": f"http://{address}"})


async def test_a_callback_wakes_the_poller_which_confirms_and_delivers_in_one_status_check(sandbox, receiver, tmp_path):
    """Scheduled a minute out, the video is delivered about when the provider finishes it: the callback makes it
    due now and one status read confirms it."""
    from kling3_tools import ops

    configured = with_callbacks(sandbox, tmp_path / "t.db")
    async with KlingService.open(configured, schedule=SLOW) as service, ops.exposed(service), service.polling():
        requests = [GenerateRequest.build(type="std-text-to-video", prompt=f"clip {n}") for n in range(3)]
        for request in requests:
            await service.submit(request, WebhookOrigin(url=receiver.url))
        await eventually(lambda: len(receiver.events) == 3, timeout=10)  # polling alone: a minute at least
    sandbox_stats = stats(sandbox)
    assert sandbox_stats["requests"]["callback"] == 3
    assert sandbox_stats["requests"]["status"] <= 2 * 3


async def test_a_forged_callback_is_refused_or_costs_one_status_read_and_delivers_nothing(sandbox, receiver, tmp_path):
    from kling3_tools import ops

    configured = with_callbacks(sandbox, tmp_path / "t.db")
    url = configured.callbacks.public_url + "/callbacks"
    set_options(sandbox, finish_seconds=60)
    async with KlingService.open(configured, schedule=SLOW) as service, ops.exposed(service), service.polling():
        request = GenerateRequest.build(type="std-text-to-video", prompt="x")
        record = await service.submit(request, WebhookOrigin(url=receiver.url))
        forged = {"data": {"task_id": record.task_id, "task_status": "succeed"}}
        async with httpx.AsyncClient() as http:
            assert (await http.post(url, content=b"not json")).status_code == 400
            assert (await http.post(url, content=b"x" * (70 * 1024))).status_code == 413
            assert (await http.post(url, json={"task_id": "n75notours"})).status_code == 404
            assert (await http.post(url, json=forged)).status_code == 204
        await eventually(lambda: stats(sandbox)["requests"].get("status", 0) == 1, timeout=10)
        await asyncio.sleep(0.5)
        assert (await service.get(record.task_id)).status != "succeeded"  # the API said it runs: nothing delivered
    assert receiver.events == []
    assert stats(sandbox)["requests"]["status"] == 1


def test_callback_settings_come_in_pairs():
    from kling3_tools.config_sources import ConfigError

    with pytest.raises(ConfigError, match="public_url and listen go together"):
        Settings.load(callbacks={"public_url": "https://k.example.com"})


async def test_a_finished_kling_task_is_charged_in_units_as_estimated(sandbox, tmp_path):
    async with KlingService.open(settings("kling", sandbox, tmp_path / "t.db"), schedule=FAST) as service:
        request = GenerateRequest.build(type="o3-pro-text-to-video", prompt="x", duration=7)
        record = await service.submit(request)
        await service.wait(record.task_id, timeout=30, policy=QUICK)
        done = await service.get(record.task_id)
    assert done is not None and done.consumed_credits == done.estimated_credits == Kling.PRICES[request.type].credits(
        7, True
    )


async def test_prices_set_in_the_config_price_the_ledger_cost_and_models(sandbox, tmp_path, capsys, monkeypatch):
    from kling3_tools.cli import main
    from kling3_tools.config_sources import ConfigError

    own = {"std-text-to-video": {"per_second": 7, "per_second_with_sound": 9}, "o3-std-video-edit": {"fixed": 50}}
    configured = settings("kling", sandbox, tmp_path / "t.db", prices=own)
    async with KlingService.open(configured) as service:
        record = await service.submit(GenerateRequest.build(type="std-text-to-video", prompt="x", duration=4))
        assert record.estimated_credits == 36 and service.prices["o3-std-video-edit"].fixed == 50
        assert service.prices["pro-text-to-video"] == Kling.PRICES["pro-text-to-video"]  # the rest as published
    monkeypatch.setenv("KLING_PRICES", json.dumps(own))
    assert await asyncio.to_thread(main, ["--provider", "kling", "cost", "-t", "std-text-to-video", "-d", "4"]) == 0
    assert capsys.readouterr().out.strip() == "36 units"
    monkeypatch.delenv("KLING_PRICES")
    with pytest.raises(ConfigError, match=r"prices.o3-std-video-edit: give fixed"):
        Settings.load(prices={"o3-std-video-edit": {"per_second": 3}})
    with pytest.raises(ConfigError, match="give per_second"):
        Settings.load(prices={"std-text-to-video": {}})


@pytest.mark.process
async def test_a_generate_killed_in_flight_is_settled_from_its_external_id_without_a_person(sandbox, tmp_path):
    """`kill -9` while the POST waits for its answer: the task exists and is billed, and the attempt is left
    `submitting`. Once its deadline passes it reads `unknown`, and a poller asks Kling by the attempt id."""
    import os
    import subprocess
    import sys

    set_options(sandbox, generate_delay=2.0)  # the task is created at once, its answer held
    keys = credentials("kling", sandbox)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")} | {
        "KLING_PROVIDER": "kling",
        "KLING_BASE_URL": sandbox.url,
        "KLING_ACCESS_KEY": keys["access_key"],
        "KLING_SECRET_KEY": keys["secret_key"],
        "KLING_STORE__URL": f"sqlite:///{tmp_path / 't.db'}",
        "KLING_TIMEOUT_SECONDS": "1",
        "KLING_MAX_RETRIES": "0",
    }
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kling3_tools", "generate", "a fox", env=env, stderr=subprocess.DEVNULL
    )
    await eventually(lambda: stats(sandbox)["requests"].get("generate", 0) == 1, timeout=30)
    cli.kill()
    await cli.wait()
    [task_id] = sandbox_tasks(sandbox)
    configured = settings("kling", sandbox, tmp_path / "t.db", timeout_seconds=1, max_retries=0)
    async with KlingService.open(configured, schedule=FAST) as service:
        [attempt] = await service.store.attempts(open_only=True)
        assert attempt.state is AttemptState.SUBMITTING and attempt.task_id is None  # the answer never came
        async with service.polling():
            await eventually(lambda: attempt_state(service, attempt.attempt_id, AttemptState.SUBMITTED), timeout=30)
            await eventually(lambda: succeeded(service, task_id), timeout=30)
        assert (await service.store.get_attempt(attempt.attempt_id)).task_id == task_id


async def test_a_clock_an_hour_behind_is_refused_with_a_word_about_the_clock(sandbox, monkeypatch):
    import types

    from kling3_tools.adapters.providers import kling as kling_module

    behind = types.SimpleNamespace(time=lambda: time.time() - 3600)
    monkeypatch.setattr(kling_module, "time", behind)  # this process's clock, for the token only
    async with client_for("kling", sandbox) as client:
        with pytest.raises(errors.AuthenticationError, match="clock"):
            await client.generate(GenerateRequest.build(type="std-text-to-video", prompt="x"))
    assert stats(sandbox)["tasks"] == 0


async def test_a_local_image_goes_inline_to_kling_with_no_asset_store_and_is_refused_by_url_only_providers(
    sandbox, tmp_path
):
    from PIL import Image

    picture = tmp_path / "face.png"
    Image.new("RGB", (400, 400), "orange").save(picture)
    set_options(sandbox, fetch_inputs=True)  # the sandbox reads what it is given, as Kling does
    fields = {"type": "std-image-to-video", "prompt": "she smiles", "image": str(picture)}
    async with KlingService.open(settings("kling", sandbox, tmp_path / "k.db"), schedule=FAST) as service:
        assert service.assets is None  # no [storage]
        request = await service.prepare(service.check(fields))
        record = await service.submit(request)
        done = await service.wait(record.task_id, timeout=30, policy=QUICK)
    assert done.status == "succeeded"
    sent = sandbox_tasks(sandbox)[record.task_id]
    assert sent["type"] == "std-image-to-video"
    async with KlingService.open(settings("kling3api", sandbox, tmp_path / "a.db")) as service:
        with pytest.raises(errors.RequestValidationError, match="set \\[storage\\] url"):
            await service.prepare(service.check(fields))
        with pytest.raises(errors.RequestValidationError, match='provider = "kling"'):
            await service.submit(request)  # an inline image: refused before anything is reserved
        assert await service.store.attempts(open_only=False) == []
    assert stats(sandbox)["requests"]["generate"] == 1


async def test_the_bot_makes_a_video_on_kling_and_the_cli_on_its_embedded_sandbox(
    fake, sandbox, tmp_path, capsys, monkeypatch
):
    pytest.importorskip("discord")
    monkeypatch.setenv("KLING_SANDBOX__FINISH_SECONDS", "0.3")
    from harness import fake_discord as fd
    from kling3_tools.cli import main

    from .support import ALICE, deliver, running_bot

    discord = {"cooldown_seconds": 0}
    async with running_bot(settings("kling", sandbox, tmp_path / "bot.db", discord=discord)) as bot:
        deliver(bot, fd.slash("generate", ALICE, prompt="A red fox in the snow", duration=5))
        await eventually(lambda: any("ready" in str(c.body) for c in fake.channel_posts()), timeout=30)
        [record] = await bot.service.store.recent(origin_kind="discord")
    assert record.estimated_credits == Kling.PRICES["pro-text-to-video"].credits(5, True)
    started = [str(c.body) for c in fake.calls if "Started" in str(c.body)]
    assert started and f"({record.estimated_credits} units)" in started[0]  # the bot says Kling's unit

    code = await asyncio.to_thread(main, ["--provider", "kling", "--sandbox", "generate", "a fox", "-d", "3", "--wait"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert Path(captured.out.strip()).is_file()  # the kept copy of the embedded sandbox's video
    assert f"Cost: {Kling.PRICES['pro-text-to-video'].credits(3, True)} units" in captured.err


@pytest.mark.process
def test_kling3_sandbox_with_the_kling_provider_says_how_to_reach_it_and_the_cli_does(tmp_path):
    import os
    import re
    import shlex
    import subprocess
    import sys

    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")} | {"HOME": str(tmp_path)}
    command = [sys.executable, "-m", "kling3_tools", "--provider", "kling", "sandbox", "--port", str(port)]
    server = subprocess.Popen([*command, "--finish-seconds", "0.3"], env=clean, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        said = "".join(server.stderr.readline() for _ in range(2))
        exports = dict(word.split("=", 1) for word in shlex.split(re.search(r"export (.*)", said).group(1)))
        assert exports["KLING_PROVIDER"] == "kling" and "KLING_API_KEY" not in exports
        made = subprocess.run(
            [sys.executable, "-m", "kling3_tools", "generate", "a fox", "-d", "3", "--wait", "--json"],
            env=clean | exports | {"KLING_STORE__URL": f"sqlite:///{tmp_path / 't.db'}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["status"] == "succeeded"
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stderr is not None:
            server.stderr.close()


async def test_a_kling_answer_too_large_is_refused_unread_and_the_next_is_read(sandbox):
    add_fault(sandbox, endpoint="status", status=200, pad_bytes=2 * 1024 * 1024, count=1)
    async with client_for("kling", sandbox) as client:
        task = await client.generate(GenerateRequest.build(type="std-text-to-video", prompt="x"))
        with pytest.raises(errors.APIError, match="larger than"):
            await client.status(task.task_id, "std-text-to-video")
        assert (await client.status(task.task_id, "std-text-to-video")).task_id == task.task_id  # the next is read
