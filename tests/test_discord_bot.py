"""The Discord bot through discord.py's own dispatch path, against a fake Discord REST API and the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

import discord
import pytest
from kling3_discord import KlingBot

from harness import fake_discord as fd
from harness.helpers import eventually
from kling3_tools.adapters.sandbox.app import SAMPLE_VIDEO
from kling3_tools.config import Settings
from kling3_tools.domain.records import Delivery, DiscordOrigin, TaskRecord
from kling3_tools.service import KlingService

from .conftest import set_options, stats
from .support import (
    ALICE,
    BOB,
    FAST,
    bot_process_env,
    bot_settings,
    deliver,
    fake_discord,
    followups,
    locked,
    running_bot,
    start_bot_process,
    texts,
)

EPHEMERAL = 64


async def delivered_record(bot: KlingBot) -> TaskRecord:
    """The one Discord task, once the poller has saved it as delivered (it saves after posting)."""

    async def delivered() -> bool:
        records = await bot.service.store.recent(origin_kind="discord")
        return len(records) == 1 and records[0].delivery is Delivery.DELIVERED

    await eventually(delivered)
    [record] = await bot.service.store.recent(origin_kind="discord")
    return record


def callbacks(fake: fd.FakeDiscord, payload: dict[str, Any]) -> list[fd.Call]:
    return fake.find("POST", f"/interactions/{payload['id']}/")


async def test_generate_defers_first_posts_one_embed_and_delivers_the_video(fake, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.5)
    async with running_bot(bot_settings(sandbox, tmp_path)) as bot:
        assert fake.find("PUT", f"/applications/{fd.APP_ID}/commands")  # commands synced at start-up
        command = fd.slash("generate", ALICE, prompt="A red fox in the snow", duration=5)
        first_call = len(fake.calls)
        deliver(bot, command)
        await eventually(lambda: any("ready" in str(c.body) for c in fake.channel_posts()))
        records = await bot.service.store.recent(origin_kind="discord")

    assert fake.calls[first_call].path.startswith(f"/interactions/{command['id']}/")  # the defer comes first
    [defer] = callbacks(fake, command)
    assert defer.body["type"] == 5
    assert defer.body["data"]["flags"] == EPHEMERAL

    [record] = records
    assert record.origin == DiscordOrigin(
        guild_id=fd.GUILD_ID, channel_id=fd.CHANNEL_ID, message_id=record.origin.message_id, user_id=ALICE
    )
    embed_posts = [c for c in fake.channel_posts() if c.body and c.body.get("embeds")]
    assert len(embed_posts) == 1  # one public embed, then edited in place
    edits = fake.find("PATCH", f"/channels/{fd.CHANNEL_ID}/messages/{record.origin.message_id}")
    assert edits, "the embed was never edited"
    fields = {f["name"]: f["value"] for f in edits[0].body["embeds"][0]["fields"]}
    assert fields["Task id"] == f"`{record.task_id}`"
    assert fields["Cost"] == "400"
    assert fields["Requested by"] == f"<@{ALICE}>"
    assert "succeeded" in edits[-1].body["embeds"][0]["title"]
    assert f"Started `{record.task_id}`" in texts(followups(fake, command))

    [ready] = [c for c in fake.channel_posts() if "ready" in str(c.body)]
    assert ready.body["content"].startswith(f"<@{ALICE}>")
    assert ready.files == [(f"{record.task_id}.mp4", len(SAMPLE_VIDEO))]  # fits the upload limit: attached
    custom_ids = [b["custom_id"] for row in ready.body["components"] for b in row["components"]]
    assert custom_ids == [f"kling3:reroll:{record.task_id}", f"kling3:edit:{record.task_id}"]
    assert stats(sandbox)["tasks"] == 1


async def test_too_large_for_the_upload_limit_posts_the_url(fake, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3)
    async with running_bot(bot_settings(sandbox, tmp_path, attach_videos_up_to_mb=0.001)) as bot:
        deliver(bot, fd.slash("generate", ALICE, prompt="x"))
        record = await delivered_record(bot)
    [ready] = [c for c in fake.channel_posts() if "ready" in str(c.body)]
    assert ready.files == []
    assert record.video_url in ready.body["content"]


async def test_a_video_on_a_private_address_is_never_fetched_into_a_channel(fake, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3, video_url_template="http://169.254.169.254/latest/{task_id}.mp4")
    async with running_bot(bot_settings(sandbox, tmp_path)) as bot:
        deliver(bot, fd.slash("generate", ALICE, prompt="x"))
        await delivered_record(bot)
    [ready] = [c for c in fake.channel_posts() if "ready" in str(c.body)]
    assert ready.files == []  # the metadata address was refused, not attached


async def test_a_failed_task_mentions_the_requester_with_the_reason(fake, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3, failure_rate=1.0)
    async with running_bot(bot_settings(sandbox, tmp_path)) as bot:
        deliver(bot, fd.slash("generate", ALICE, prompt="x"))
        await eventually(lambda: any("failed" in str(c.body) for c in fake.channel_posts()))
        [record] = await bot.service.store.recent(origin_kind="discord")
    [failed] = [c for c in fake.channel_posts() if "failed" in str(c.body)]
    assert failed.body["content"].startswith(f"<@{ALICE}> your video failed (task `{record.task_id}`)")
    assert "simulated generation failure" in failed.body["content"]


@pytest.mark.parametrize(("choice", "spends"), [("Confirm", True), ("Cancel", False)])
async def test_confirmation_above_the_threshold(fake, sandbox, tmp_path, choice, spends):
    async with running_bot(bot_settings(sandbox, tmp_path, confirm_above_credits=300)) as bot:
        command = fd.slash("generate", ALICE, prompt="x")
        deliver(bot, command)
        await eventually(lambda: any("Continue?" in str(c.body) for c in followups(fake, command)))
        [question] = [c for c in followups(fake, command) if "Continue?" in str(c.body)]
        assert "400 credits" in question.body["content"]
        buttons = {b["label"]: b["custom_id"] for row in question.body["components"] for b in row["components"]}
        click = fd.button(buttons[choice], ALICE, question.answer)
        deliver(bot, click)
        await eventually(lambda: bool(callbacks(fake, click)))
        if spends:
            await eventually(lambda: "Started" in texts(followups(fake, command)))
    assert stats(sandbox)["tasks"] == (1 if spends else 0)
    assert stats(sandbox)["balance"] == 100_000 - (400 if spends else 0)


@pytest.mark.parametrize(
    ("settings", "payload", "expected"),
    [
        ({"channel_ids": [1]}, fd.slash("generate", ALICE, prompt="x"), "not enabled in this channel"),
        ({"guild_ids": [1]}, fd.slash("generate", ALICE, prompt="x"), "not enabled in this server"),
        ({}, fd.slash("generate", ALICE, prompt="x", guild=False), "not available in direct messages"),
        ({}, fd.slash("generate", ALICE, prompt="x", duration=5, model="o3-pro-text-to-video", cfg_scale=0.5),
         "only Kling 3.0 types take it"),
        ({"daily_credit_budget_per_user": 300}, fd.slash("generate", ALICE, prompt="x"),
         "only 300 of the 300-credit budget"),
    ],
)  # fmt: skip
async def test_refusals_are_ephemeral_and_spend_nothing(fake, sandbox, tmp_path, settings, payload, expected):
    async with running_bot(bot_settings(sandbox, tmp_path, **settings)) as bot:
        deliver(bot, payload)
        await eventually(lambda: bool(followups(fake, payload)))
    [refusal] = followups(fake, payload)
    assert expected in refusal.body["content"]
    assert refusal.body.get("flags", 0) & EPHEMERAL or callbacks(fake, payload)[0].body["data"]["flags"] == EPHEMERAL
    assert fake.channel_posts() == []
    assert stats(sandbox)["tasks"] == 0


async def test_attachments_are_checked_and_their_urls_sent(fake, sandbox, tmp_path):
    image = fd.attachment("fox.png", "image/png", 2048, "https://cdn.discordapp.com/attachments/1/2/fox.png")
    text = fd.attachment("notes.txt", "text/plain", 10, "https://cdn.discordapp.com/attachments/1/3/notes.txt")
    huge = fd.attachment("big.png", "image/png", 50 * 1024 * 1024, "https://cdn.discordapp.com/attachments/1/4/big.png")
    async with running_bot(bot_settings(sandbox, tmp_path)) as bot:
        wrong = fd.slash("animate", ALICE, prompt="x", attachments={"image": text})
        large = fd.slash("animate", ALICE, prompt="x", attachments={"image": huge})
        good = fd.slash("animate", ALICE, prompt="She smiles", attachments={"image": image})
        for payload in (wrong, large, good):
            deliver(bot, payload)
        await eventually(lambda: all(followups(fake, p) for p in (wrong, large)) and bool(followups(fake, good)))
        await eventually(lambda: "Started" in texts(followups(fake, good)))
        [record] = await bot.service.store.recent(origin_kind="discord")
    assert "is not an image" in texts(followups(fake, wrong))
    assert "the limit is 20 MB" in texts(followups(fake, large))
    assert record.request["image"] == image["url"]
    assert record.type == "pro-image-to-video"


async def test_result_buttons_are_owner_only_and_survive_a_restart(fake, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3)
    settings = bot_settings(sandbox, tmp_path)
    async with running_bot(settings) as bot:
        deliver(bot, fd.slash("generate", ALICE, prompt="A fox", sound=False))
        record = await delivered_record(bot)
    [ready] = [c for c in fake.channel_posts() if "ready" in str(c.body)]
    async with running_bot(settings) as restarted:  # a new process: only the custom id is left
        intruder = fd.button(f"kling3:reroll:{record.task_id}", BOB, ready.answer)
        deliver(restarted, intruder)
        await eventually(lambda: bool(callbacks(fake, intruder)))
        owner = fd.button(f"kling3:reroll:{record.task_id}", ALICE, ready.answer)
        deliver(restarted, owner)
        await eventually(lambda: "Started" in texts(followups(fake, owner)))
        records = await restarted.service.store.recent(origin_kind="discord")
    [refusal] = callbacks(fake, intruder)
    assert refusal.body["type"] == 4
    assert refusal.body["data"]["flags"] == EPHEMERAL
    assert "Only the person who made this video" in refusal.body["data"]["content"]
    assert len(records) == 2
    assert records[0].request == records[1].request  # same settings again
    assert stats(sandbox)["tasks"] == 2


async def test_edit_button_asks_for_a_prompt_then_edits_this_video(fake, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.3)
    async with running_bot(bot_settings(sandbox, tmp_path)) as bot:
        deliver(bot, fd.slash("generate", ALICE, prompt="A fox"))
        record = await delivered_record(bot)
        [ready] = [c for c in fake.channel_posts() if "ready" in str(c.body)]
        click = fd.button(f"kling3:edit:{record.task_id}", ALICE, ready.answer)
        deliver(bot, click)
        await eventually(lambda: bool(callbacks(fake, click)))
        [modal] = callbacks(fake, click)
        assert modal.body["type"] == 9
        text_input = modal.body["data"]["components"][0]["components"][0]["custom_id"]
        submit = fd.modal_submit(modal.body["data"]["custom_id"], ALICE, {text_input: "Make it snow"})
        deliver(bot, submit)
        await eventually(lambda: "Started" in texts(followups(fake, submit)))
        records = await bot.service.store.recent(origin_kind="discord")
    edit = records[0]
    assert edit.type == "o3-std-video-edit"
    assert edit.request["video"] == record.video_url
    assert edit.request["prompt"] == "Make it snow"


async def test_a_restart_between_submit_and_finish_still_posts_exactly_once(fake, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=2.0)
    settings = bot_settings(sandbox, tmp_path)
    async with running_bot(settings) as bot:
        command = fd.slash("generate", ALICE, prompt="x")
        deliver(bot, command)
        await eventually(lambda: "Started" in texts(followups(fake, command)))
    assert not any("ready" in str(c.body) for c in fake.channel_posts())
    async with running_bot(settings):
        await eventually(lambda: any("ready" in str(c.body) for c in fake.channel_posts()), timeout=30)
        await eventually(lambda: True)
    assert len([c for c in fake.channel_posts() if "ready" in str(c.body)]) == 1


async def test_cost_budget_and_models_are_ephemeral_and_free(fake, sandbox, tmp_path):
    settings = bot_settings(sandbox, tmp_path, daily_credit_budget_per_user=1000, admin_role="video-admin")
    async with running_bot(settings) as bot:
        cost = fd.slash("cost", ALICE, model="pro-text-to-video", duration=10, sound=False)
        budget = fd.slash("budget", ALICE)
        models = fd.slash("models", ALICE)
        usage = fd.slash("usage", BOB, roles=[fd.ADMIN_ROLE_ID])
        for payload in (cost, budget, models, usage):
            deliver(bot, payload)
        await eventually(lambda: all(callbacks(fake, p) for p in (cost, budget, models, usage)))
    answers = {name: callbacks(fake, p)[0].body for name, p in
               {"cost": cost, "budget": budget, "models": models, "usage": usage}.items()}  # fmt: skip
    for answer in answers.values():
        assert answer["type"] == 4
        assert answer["data"]["flags"] == EPHEMERAL
    assert "540 credits" in answers["cost"]["data"]["content"]
    assert "1000 credits" in answers["budget"]["data"]["content"]
    assert answers["models"]["data"]["content"].count("\n") == 11
    assert "Nothing spent" in answers["usage"]["data"]["content"]
    assert stats(sandbox)["tasks"] == 0


async def test_reference_and_edit_commands_send_the_attachment_urls(fake, sandbox, tmp_path):
    refs = [fd.attachment(f"ref{i}.png", "image/png", 1000, f"https://cdn.discordapp.com/a/{i}.png") for i in (1, 2)]
    clip = fd.attachment("clip.mp4", "video/mp4", 5000, "https://cdn.discordapp.com/a/clip.mp4")
    async with running_bot(bot_settings(sandbox, tmp_path)) as bot:
        reference = fd.slash("reference", ALICE, prompt="A ship", attachments={"image1": refs[0], "image2": refs[1]})
        edit = fd.slash("edit", ALICE, prompt="Snow", keep_original_sound=True, attachments={"video": clip})
        for payload in (reference, edit):
            deliver(bot, payload)
        await eventually(lambda: all("Started" in texts(followups(fake, p)) for p in (reference, edit)))
        records = {r.type: r for r in await bot.service.store.recent(origin_kind="discord")}
    assert records["o3-pro-reference-to-video"].request["images"] == [r["url"] for r in refs]
    assert records["o3-std-video-edit"].request["video"] == clip["url"]
    assert records["o3-std-video-edit"].request["keep_original_sound"] is True
    assert stats(sandbox)["balance"] == 100_000 - 5 * 72 - 360


@pytest.mark.parametrize(
    ("limits", "refusal"),
    [
        ({"cooldown_seconds": 60, "max_concurrent_tasks_per_user": 0}, "Slow down"),
        ({"cooldown_seconds": 0, "max_concurrent_tasks_per_user": 1}, "1 videos in progress (the limit is 1"),
    ],
)
async def test_cooldown_and_concurrent_task_limits_hold_across_a_restart(fake, sandbox, tmp_path, limits, refusal):
    set_options(sandbox, finish_seconds=30)
    settings = bot_settings(sandbox, tmp_path, **limits)
    async with running_bot(settings) as bot:
        first = fd.slash("generate", ALICE, prompt="x")
        deliver(bot, first)
        await eventually(lambda: "Started" in texts(followups(fake, first)))
    async with running_bot(settings) as restarted:  # the limits live in the store, not in the process
        again = fd.slash("generate", ALICE, prompt="y")
        deliver(restarted, again)
        await eventually(lambda: bool(followups(fake, again)))
        other = fd.slash("generate", BOB, prompt="z")  # another user is not held back
        deliver(restarted, other)
        await eventually(lambda: "Started" in texts(followups(fake, other)))
    assert refusal in texts(followups(fake, again))
    assert stats(sandbox)["tasks"] == 2


async def test_ten_commands_at_once_by_one_user_never_beat_the_budget(fake, sandbox, tmp_path):
    set_options(sandbox, generate_delay=0.2, finish_seconds=60)
    settings = bot_settings(sandbox, tmp_path, daily_credit_budget_per_user=1000, max_concurrent_tasks_per_user=0)
    async with running_bot(settings) as bot:
        commands = [fd.slash("generate", ALICE, prompt=f"fox {i}") for i in range(10)]
        for command in commands:
            deliver(bot, command)
        await eventually(lambda: all(followups(fake, c) for c in commands))
    answers = [texts(followups(fake, c)) for c in commands]
    assert sum("Started" in a for a in answers) == 2, answers  # 400 credits each: two fit in 1000
    assert all("daily_credit_budget_per_user" in a for a in answers if "Started" not in a)
    assert stats(sandbox)["requests"]["generate"] == 2


async def test_an_unknown_outcome_is_shown_as_maybe_charged(fake, sandbox, tmp_path):
    set_options(sandbox, generate_delay=3)
    settings = bot_settings(sandbox, tmp_path).model_copy(update={"timeout_seconds": 0.5, "max_retries": 0})
    async with running_bot(settings) as bot:
        command = fd.slash("generate", ALICE, prompt="x")
        deliver(bot, command)
        await eventually(lambda: bool(followups(fake, command)))
    assert "may have been charged" in texts(followups(fake, command))
    edits = [c for c in fake.calls if c.method == "PATCH" and "/messages/" in c.path]
    assert "outcome unknown (may have been charged)" in str(edits[-1].body)


async def test_the_bots_poller_outlives_a_store_outage(fake, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=1.0)
    settings = bot_settings(sandbox, tmp_path)
    settings.store.busy_timeout_seconds = 0.2
    async with running_bot(settings) as bot:
        command = fd.slash("generate", ALICE, prompt="A fox", duration=3)
        deliver(bot, command)
        await eventually(lambda: "Started" in texts(followups(fake, command)))
        with locked(tmp_path / "bot.db"):
            await asyncio.sleep(3)  # the poller's sweeps fail meanwhile
        await eventually(lambda: any("ready" in str(c.body) for c in fake.channel_posts()), timeout=30)


async def test_status_shows_someone_elses_video_only_to_admins(fake, sandbox, tmp_path):
    set_options(sandbox, finish_seconds=30)
    async with running_bot(bot_settings(sandbox, tmp_path, admin_role="video-admin")) as bot:
        command = fd.slash("generate", ALICE, prompt="Alice's private idea")
        deliver(bot, command)
        await eventually(lambda: "Started" in texts(followups(fake, command)))
        [record] = await bot.service.recent(origin_kind="discord")
        peek = fd.slash("status", BOB, task_id=record.task_id)
        deliver(bot, peek)
        await eventually(lambda: bool(followups(fake, peek)))
    answer = followups(fake, peek)[-1].body
    assert "not one of yours" in str(answer) and "private idea" not in str(answer)


async def test_status_autocompletes_your_tasks_and_tasks_lists_them(fake, sandbox, tmp_path):
    async with running_bot(bot_settings(sandbox, tmp_path)) as bot:
        command = fd.slash("generate", ALICE, prompt="A fox")
        deliver(bot, command)
        await eventually(lambda: "Started" in texts(followups(fake, command)))
        [record] = await bot.service.store.recent(origin_kind="discord")
        typing = fd.slash("status", ALICE, task_id=record.task_id[:5])
        typing["type"] = 4  # APPLICATION_COMMAND_AUTOCOMPLETE
        typing["data"]["options"][0]["options"][0]["focused"] = True
        someone_else = fd.slash("tasks", BOB)
        mine = fd.slash("tasks", ALICE)
        status = fd.slash("status", ALICE, task_id=record.task_id)
        for payload in (typing, someone_else, mine, status):
            deliver(bot, payload)
        await eventually(lambda: all(callbacks(fake, p) for p in (typing, someone_else, mine, status)))
        await eventually(lambda: bool(followups(fake, status)))
    [suggestions] = callbacks(fake, typing)
    assert suggestions.body["type"] == 8
    assert [c["value"] for c in suggestions.body["data"]["choices"]] == [record.task_id]
    assert "no videos yet" in callbacks(fake, someone_else)[0].body["data"]["content"]
    assert record.task_id in callbacks(fake, mine)[0].body["data"]["content"]
    [answer] = followups(fake, status)
    assert f"`{record.task_id}`" in str(answer.body["embeds"])


async def test_a_poller_worker_posts_results_over_rest_without_a_gateway(monkeypatch, sandbox, postgres_url):
    """What `kling3 poller` does with DISCORD_TOKEN set, through the notifier the bot registers as an entry
    point: the bot token over REST, no gateway, no commands."""
    from kling3_tools.cli.workers import worker_notifiers
    from kling3_tools.domain.models import GenerateRequest

    settings = Settings.load(
        api_key=sandbox.api_key,
        base_url=sandbox.url,
        store={"url": postgres_url},
        poller={"rate_limit_per_second": 100, "lease_seconds": 2},
    )
    origin = DiscordOrigin(guild_id=fd.GUILD_ID, channel_id=fd.CHANNEL_ID, user_id=ALICE)
    async with fake_discord(monkeypatch) as fake, KlingService.open(settings, schedule=FAST) as service:
        record = await service.submit(GenerateRequest.build(type="std-text-to-video", prompt="a fox"), origin)
        async with contextlib.AsyncExitStack() as stack:
            assert await worker_notifiers(service, stack) == []  # no token: no Discord delivery
            monkeypatch.setenv("DISCORD_TOKEN", "fake-bot-token")
            [notifier] = await worker_notifiers(service, stack)
            service.register(notifier)
            worker = asyncio.create_task(service.poller().run())
            try:
                await eventually(lambda: len(fake.channel_posts()) == 1, timeout=30)
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
    [post] = fake.channel_posts()
    assert post.path == f"/channels/{fd.CHANNEL_ID}/messages"
    assert f"<@{ALICE}> your video is ready" in post.body["content"]
    assert post.files and post.files[0][1] == len(SAMPLE_VIDEO)  # the guild's upload limit was read over REST
    assert fake.find("GET", f"/guilds/{fd.GUILD_ID}")
    assert not fake.find("GET", "/gateway")  # never asked where the gateway is: no gateway connection
    assert not fake.find("PUT", "/commands")  # and registered no commands
    assert record.task_id in post.body["components"][0]["components"][0]["custom_id"]


async def test_a_worker_with_a_token_but_no_discord_extra_says_so_in_one_line(monkeypatch, sandbox, tmp_path):
    from kling3_tools.cli.workers import worker_notifiers
    from kling3_tools.launch import UsageError

    monkeypatch.setenv("DISCORD_TOKEN", "fake-bot-token")
    monkeypatch.delitem(sys.modules, "kling3_discord.notifier", raising=False)
    monkeypatch.setitem(sys.modules, "discord", None)  # as if discord.py were not installed
    async with KlingService.open(bot_settings(sandbox, tmp_path)) as service, contextlib.AsyncExitStack() as stack:
        with pytest.raises(UsageError, match="DISCORD_TOKEN is set, but delivery to Discord needs the discord extra"):
            await worker_notifiers(service, stack)


async def test_the_bot_runs_the_configured_slice_of_shards(sandbox, tmp_path):
    settings = bot_settings(sandbox, tmp_path, shard_count=4, shard_ids=[2, 3])
    async with KlingService.open(settings, schedule=FAST) as service:
        bot = KlingBot(service, settings)
        assert isinstance(bot, discord.AutoShardedClient)
        assert (bot.shard_count, bot.shard_ids) == (4, [2, 3])


@pytest.mark.process
async def test_a_taken_metrics_port_ends_the_bot_with_one_line_and_exit_2(monkeypatch, sandbox, tmp_path):
    """A configuration error, as for the poller (the bot said `UsageError: …` and exit 1)."""
    import socket

    log = tmp_path / "bot.log"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        async with fake_discord(monkeypatch) as fake:
            env = {**bot_process_env(fake, sandbox, tmp_path), "KLING_METRICS__LISTEN": address}
            code = await asyncio.to_thread(start_bot_process(env, log).wait, 60)
    said = log.read_text()
    assert code == 2, said
    assert said.startswith(f"error: cannot listen on [metrics] listen = {address}") and said.count("\n") == 1


@pytest.mark.process
@pytest.mark.parametrize("when", ["following", "logging in"])
async def test_sigterm_stops_the_bot_gracefully(monkeypatch, sandbox, tmp_path, when):
    """`docker stop`: the poller stops and the store closes before the process ends (Python's own SIGTERM
    handler ended it at once). During login too (that ended with 'Connector is closed', exit 1)."""
    log = tmp_path / "bot.log"
    async with fake_discord(monkeypatch) as fake:
        if when == "logging in":
            fake.delays["/users/@me"] = 5  # the SIGTERM comes first; closing must not wait for it
        bot = start_bot_process(bot_process_env(fake, sandbox, tmp_path), log)
        try:
            marker = "started for" if when == "following" else "logging in using static token"
            await eventually(lambda: marker in log.read_text(), timeout=30)
            bot.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(bot.wait, 20) == 0, log.read_text()
        finally:
            if bot.poll() is None:
                bot.kill()
    assert "Traceback" not in log.read_text() and "error:" not in log.read_text()
    assert not (tmp_path / "bot.db-wal").exists()  # the store was closed, not dropped


@pytest.mark.process
async def test_a_second_sigterm_while_the_bot_closes_ends_it_at_once(monkeypatch, sandbox, tmp_path):
    """The poller gives a status check in flight `stop_grace_seconds` (10) to finish; a second SIGTERM does not
    wait for it (it closed the store under the stopping poller, whose leases then stayed held)."""
    from kling3_tools.domain.models import GenerateRequest

    set_options(sandbox, status_delay=30)
    request = GenerateRequest.build(type="std-text-to-video", prompt="x")
    async with KlingService.open(bot_settings(sandbox, tmp_path)) as service:  # a Discord task, due now
        task = await service.client.generate(request)
        origin = DiscordOrigin(guild_id=1, channel_id=2, message_id=3, user_id=4)
        record = TaskRecord.submitted(task, request, api_url=service.base_url, origin=origin)
        record.due_at = record.submitted_at
        await service.store.add(record)
    log = tmp_path / "bot.log"
    async with fake_discord(monkeypatch) as fake:
        bot = start_bot_process(bot_process_env(fake, sandbox, tmp_path), log)
        try:
            await eventually(lambda: stats(sandbox)["requests"].get("status", 0) >= 1, timeout=30)  # in flight
            bot.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            bot.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(bot.wait, 5) == 130, log.read_text()
        finally:
            if bot.poll() is None:
                bot.kill()
    assert "Traceback" not in log.read_text()
