"""What a new user trips over first, through the real entry points as subprocesses with an empty HOME:
one line per problem, the right exit code, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.helpers import SECRET, eventually
from kling3_tools.domain import catalog

ENTRY_POINTS = {
    "kling3": [sys.executable, "-m", "kling3_tools"],
    "kling3-mcp": [sys.executable, "-m", "kling3_tools.mcp"],
    "kling3-discord": [
        sys.executable,
        "-c",
        "import sys; from kling3_tools.cli import discord_main; sys.exit(discord_main())",
    ],
}


def run(command: list[str], *args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KLING_", "DISCORD_"))}
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**clean, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **env},
    )


def one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.process
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("api_key = \n", "not valid TOML"),
        ("[poller]\nrate_limit_per_second = 'fast'\n", "poller.rate_limit_per_second"),
        ("[store]\nurl = 'x'\nwho = 1\n", "store.who: Extra inputs are not permitted"),
    ],
)
def test_every_entry_point_names_the_broken_config_file(tmp_path, entry, content, says):
    config = tmp_path / "config.toml"
    config.write_text(content)
    over_http = ["--transport", "http", "--port", "0"]  # over stdio it is said in the answers (test_mcp_server)
    args = ["--config", str(config), *{"kling3": ["tasks"], "kling3-mcp": over_http}.get(entry, [])]
    result = run(ENTRY_POINTS[entry], *args, home=tmp_path, DISCORD_TOKEN="x")
    line = one_clean_line(result)
    assert result.returncode == 2 and says in line and str(config) in line
    if "TOML" in says:
        assert "line 1" in line


@pytest.mark.process
@pytest.mark.parametrize("entry", ["kling3", "kling3-discord"])
def test_a_missing_config_file_is_one_line(tmp_path, entry):
    args = ["--config", str(tmp_path / "missing.toml")] + (["tasks"] if entry == "kling3" else [])
    result = run(ENTRY_POINTS[entry], *args, home=tmp_path, DISCORD_TOKEN="x")
    assert result.returncode == 2 and "missing.toml" in one_clean_line(result)


@pytest.mark.process
def test_a_base_url_without_a_scheme_says_what_it_should_be(tmp_path):
    result = run(ENTRY_POINTS["kling3"], "--base-url", "kling3api.com", "status", "n75x", home=tmp_path)
    assert result.returncode == 2 and "base_url: must be an http(s) URL" in one_clean_line(result)


@pytest.mark.process
def test_the_sandbox_on_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = run(ENTRY_POINTS["kling3"], "sandbox", "--port", port, home=tmp_path)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in one_clean_line(result)


@pytest.mark.process
def test_a_closed_pipe_is_not_an_error(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    process = subprocess.Popen(
        [*ENTRY_POINTS["kling3"], "tasks", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**clean, "HOME": str(tmp_path)},
    )
    process.stdout.close()  # like `| head -1`, before a line was written
    _, stderr = process.communicate(timeout=60)
    # rich exits 1 on a broken pipe, quietly; what matters is that no traceback reaches the terminal
    assert process.returncode in (0, 1) and b"Traceback" not in stderr and b"BrokenPipe" not in stderr


@pytest.mark.process
def test_sandbox_is_accepted_after_the_command_too(tmp_path):
    result = run(ENTRY_POINTS["kling3"], "generate", "A fox", "--sandbox", "--wait", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(".mp4")


@pytest.mark.process
def test_download_without_wait_is_refused_before_spending(tmp_path):
    result = run(ENTRY_POINTS["kling3"], "--sandbox", "generate", "A fox", "--download", "x.mp4", home=tmp_path)
    assert result.returncode == 2 and "--download needs --wait" in one_clean_line(result)


@pytest.mark.process
def test_a_download_that_cannot_be_written_is_one_line(tmp_path):
    result = run(
        ENTRY_POINTS["kling3"], "--sandbox", "generate", "A fox", "--wait", "--download", "/proc/x.mp4", home=tmp_path
    )
    assert result.returncode == 1 and "Cannot write /proc/x.mp4" in one_clean_line(result)


@pytest.mark.process
def test_a_trailing_slash_means_a_new_folder(tmp_path):
    target = tmp_path / "videos"
    result = run(
        ENTRY_POINTS["kling3"], "--sandbox", "generate", "A fox", "--wait", "--download", f"{target}/", home=tmp_path
    )
    assert result.returncode == 0, result.stderr
    [video] = target.iterdir()
    assert video.suffix == ".mp4" and video.stat().st_size > 0


@pytest.mark.process
def test_install_hints_work_from_a_checkout(tmp_path):
    result = run(
        ENTRY_POINTS["kling3"], "tasks", home=tmp_path, KLING_STORE__URL="postgresql://nobody@127.0.0.1:1/none"
    )
    assert result.returncode == 1
    assert "cannot reach PostgreSQL" in one_clean_line(result)
    from kling3_tools.domain.errors import install_hint

    assert "pip install -e '.[postgres]'" in install_hint("postgres")


@pytest.mark.process
async def test_the_embedded_sandbox_keeps_its_tasks_across_commands_and_a_poller(tmp_path, receiver):
    """generate without waiting, then wait, then a poller, then tasks: four processes, one sandbox account."""
    home = tmp_path / "home"
    env = {"KLING_SANDBOX__FINISH_SECONDS": "1", "KLING_POLLER__WEBHOOK_SECRET": SECRET, "XDG_DATA_HOME": str(home)}
    kling3 = ENTRY_POINTS["kling3"]
    first = run(kling3, "--sandbox", "generate", "A fox", home=home, **env)
    hooked = run(kling3, "--sandbox", "generate", "A hare", "--notify-webhook", receiver.url, home=home, **env)
    assert first.returncode == 0 and hooked.returncode == 0, first.stderr + hooked.stderr
    waited = run(kling3, "--sandbox", "wait", first.stdout.strip(), "--timeout", "30", home=home, **env)
    assert waited.returncode == 0 and waited.stdout.strip().endswith(".mp4"), waited.stderr

    clean = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    poller = await asyncio.create_subprocess_exec(
        *kling3, "--sandbox", "poller", env={**clean, "HOME": str(home), **env}, stderr=subprocess.DEVNULL
    )
    try:
        await eventually(lambda: len(receiver.events) == 1, timeout=30)
    finally:
        poller.send_signal(signal.SIGTERM)
        await asyncio.wait_for(poller.wait(), 30)
    assert receiver.events[0]["task"]["task_id"] == hooked.stdout.strip()
    listed = run(kling3, "--sandbox", "tasks", home=home, **env).stdout
    assert listed.count("succeeded") == 2 and "running" not in listed


async def test_tables_fold_long_ids_and_urls_instead_of_cutting_them(tmp_path, monkeypatch):
    from rich.console import Console

    from kling3_tools.adapters.store import open_store
    from kling3_tools.cli import offline, output, tasks
    from kling3_tools.config import Settings

    from .support import make_record

    screen = io.StringIO()
    monkeypatch.setattr(output, "out", Console(file=screen, width=100, force_terminal=True, markup=False))
    await offline.cmd_models(argparse.Namespace(json=False), Settings.load())
    assert all(spec.type.value in screen.getvalue() for spec in catalog.list_models(catalog.PRICES))

    url = "https://cdn.example.com/videos/" + "a" * 90 + "/n75long.mp4"
    store = await open_store(f"sqlite:///{tmp_path}/t.db")
    record = make_record("n75" + "b" * 30)
    record.video_urls = [url]
    await store.add(record)
    await store.close()
    screen.truncate(0)
    args = argparse.Namespace(tasks_command=None, status=None, limit=20, json=False, sandbox=False, refresh_urls=False)
    await tasks.cmd_tasks(args, Settings.load(store={"url": f"sqlite:///{tmp_path}/t.db"}))
    shown = screen.getvalue()
    assert record.task_id in shown and "…" not in shown
    cells = "".join(line.split("│")[-2].strip() for line in shown.splitlines() if line.count("│") > 2)
    assert url in cells  # folded over several lines, every character kept


@pytest.mark.process
async def test_the_readme_walk_from_an_empty_home(tmp_path):
    """The README's own commands, in order, as a new user types them."""
    home = tmp_path / "home"
    env = {"KLING_SANDBOX__FINISH_SECONDS": "1", "XDG_DATA_HOME": str(home / "data")}
    kling3 = ENTRY_POINTS["kling3"]
    fox = tmp_path / "fox.mp4"
    steps = {
        "try it": run(
            kling3, "--sandbox", "generate", "A red fox in the snow", "--wait", "--download", str(fox), home=home, **env
        ),
        "generate": run(kling3, "--sandbox", "generate", "A hare", home=home, **env),
    }
    steps["wait"] = run(kling3, "--sandbox", "wait", steps["generate"].stdout.strip(), home=home, **env)
    steps["tasks"] = run(kling3, "--sandbox", "tasks", home=home, **env)
    steps["cost"] = run(kling3, "cost", "-t", "std-text-to-video", "-d", "5", home=home)
    steps["models"] = run(kling3, "models", home=home)
    for name, result in steps.items():
        assert result.returncode == 0 and "Traceback" not in result.stderr, (name, result.stderr)
    assert fox.stat().st_size > 0 and steps["tasks"].stdout.count("succeeded") == 2
    assert steps["cost"].stdout.strip() == "300 credits"

    bad = run(kling3, "--sandbox", "generate", "x", "-d", "abc", "-a", "4:3", home=home, **env)
    assert bad.returncode == 2 and "2 problems" in bad.stderr and "Traceback" not in bad.stderr
    generate_20 = run(kling3, "--sandbox", "generate", "x", "-d", "20", home=home, **env)
    cost_20 = run(kling3, "cost", "-d", "20", home=home)
    assert "`duration` must be 3-15 seconds (got 20)" in generate_20.stderr and cost_20.stderr == generate_20.stderr

    broken = tmp_path / "config.toml"
    broken.write_text("[poller\n")
    config_error = run(kling3, "--config", str(broken), "tasks", home=home)
    assert config_error.returncode == 2 and str(broken) in one_clean_line(config_error)

    clean = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    poller = await asyncio.create_subprocess_exec(
        *kling3, "--sandbox", "poller", env={**clean, "HOME": str(home), **env}, stderr=subprocess.PIPE
    )
    assert poller.stderr is not None
    started = ""
    while "started" not in started:
        started = (await asyncio.wait_for(poller.stderr.readline(), 30)).decode()
    poller.send_signal(signal.SIGTERM)
    await asyncio.wait_for(poller.communicate(), 30)
    assert "no task to follow yet" in started and poller.returncode == 0


def test_two_sandbox_processes_share_one_account_without_losing_credits(tmp_path):
    from kling3_tools.adapters.sandbox.options import SandboxOptions
    from kling3_tools.adapters.sandbox.state import SandboxState, SandboxTask

    options = SandboxOptions(starting_balance=1000, task_id_template="t{n}")
    first, second = (SandboxState(options, path=tmp_path / "account.db") for _ in range(2))
    try:

        def task(state: SandboxState) -> SandboxTask:
            task_id = options.task_id_template.format(n=state.task_count())
            return SandboxTask(task_id, catalog.TaskType.PRO_TEXT_TO_VIDEO, {}, 300, 0.0, 0.0, False)

        assert first.charge(task(first)) and second.charge(task(second))  # t0, then t1: no collision
        assert sorted([first.find("t0").task_id, second.find("t0").task_id]) == ["t0", "t0"]
        with pytest.raises(Exception, match="UNIQUE"):
            second.charge(SandboxTask("t0", catalog.TaskType.PRO_TEXT_TO_VIDEO, {}, 300, 0.0, 0.0, False))
        third = SandboxState(options, path=tmp_path / "account.db")
        assert third.balance == 400  # read from the file; the refused insert took nothing
        third.close()
    finally:
        first.close()
        second.close()


async def test_a_sandbox_video_recorded_by_one_process_is_served_by_the_next(tmp_path):
    from kling3_tools.config import Settings
    from kling3_tools.domain.models import GenerateRequest
    from kling3_tools.service import KlingService

    settings = Settings.load(sandbox={"finish_seconds": 0.2})
    request = GenerateRequest.build(type="std-text-to-video", prompt="x", duration=3)
    async with KlingService.open(settings, sandbox=True) as earlier:
        record = await earlier.submit(request)
        await earlier.wait(record.task_id, timeout=30)
        old_url = (await earlier.get(record.task_id)).video_url
    async with KlingService.open(settings, sandbox=True) as later:
        new_url = (await later.get(record.task_id)).video_url
        assert new_url.startswith(later.base_url) and new_url != old_url
        checked = await later.status(record.task_id)  # what MCP's get_video_status hands out
        assert checked.record.video_url == new_url and checked.task.video_url.startswith(later.base_url)
        assert (await later.download((await later.status(record.task_id)).task, tmp_path)).stat().st_size > 0


@pytest.mark.process
def test_common_flags_work_after_a_sub_action_and_reach_every_front_end(tmp_path):
    resolve = run(ENTRY_POINTS["kling3"], "tasks", "resolve", "attempt-x", "--release", "--sandbox", home=tmp_path)
    assert resolve.returncode == 1 and "No attempt attempt-x" in one_clean_line(resolve)
    mcp = run(ENTRY_POINTS["kling3"], "mcp", "--base-url", "kling3api.com", "--transport", "http", home=tmp_path)
    assert mcp.returncode == 2 and "base_url" in one_clean_line(mcp)  # over HTTP, read before it listens


# What spends nothing works without a key; what needs one says so in each front end's own terms, first.


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No key anywhere: an empty home (no config file) and no KLING_ variables; the store in `tmp_path`."""
    for name in [n for n in os.environ if n.startswith("KLING_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("KLING_STORE__URL", f"sqlite:///{tmp_path / 'tasks.db'}")
    return tmp_path


def kling3(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from kling3_tools.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_story_is_planned_and_stories_listed_with_no_key(no_key, capsys):
    from .support import LIGHTHOUSE

    (no_key / "lighthouse.toml").write_text(LIGHTHOUSE)
    code, _, stderr = kling3(capsys, "story", "plan", str(no_key / "lighthouse.toml"))
    assert code == 0, stderr
    code, out, stderr = kling3(capsys, "story", "list")
    assert code == 0 and "No stories yet" in out + stderr


def test_generate_with_no_key_says_so_in_cli_terms_before_the_price_and_reserves_nothing(no_key, capsys):
    code, _, stderr = kling3(capsys, "generate", "a fox")
    assert code == 2
    assert "Cost" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error")]
    assert "KLING_API_KEY" in line and "--sandbox" in line and "api_key=" not in line
    assert asyncio.run(attempts_recorded()) == []
    assert kling3(capsys, "poller")[0] == 2  # a poller's whole work is asking the API: it says so and stops


async def attempts_recorded() -> list[object]:
    from kling3_tools import KlingService, Settings

    async with KlingService.open(Settings.load()) as service:
        return list(await service.store.attempts(open_only=False))


async def test_python_says_what_to_do_in_python_and_reserves_nothing(no_key):
    from kling3_tools import GenerateRequest, KlingService, NoAPIKeyError, Settings

    async with KlingService.open(Settings.load()) as service:
        request = GenerateRequest.build(type="std-text-to-video", prompt="a fox")
        assert service.check(GenerateRequest.fields_of(request.recorded())).request.estimated_credits() == 300
        with pytest.raises(NoAPIKeyError) as info:
            await service.submit(request)
        assert await service.store.attempts() == []
    assert "sandbox=True" in info.value.message and "--sandbox" not in info.value.message


async def test_mcp_estimates_with_no_key_and_a_generate_says_what_to_do_in_mcp_terms(no_key):
    from .support import connect, text

    env = {**os.environ, "KLING_API_KEY": ""}
    async with connect(None, no_key, env) as client:
        cost = await client.call_tool("estimate_video_cost", {"type": "std-text-to-video", "duration": 5})
        assert not cost.is_error, text(cost)
        made = await client.call_tool("generate_video", {"type": "std-text-to-video", "prompt": "x"})
    assert made.is_error
    assert "MCP client" in text(made) and "--sandbox" in text(made) and "api_key=" not in text(made)


def test_the_bot_without_a_key_refuses_to_start_in_its_own_terms(no_key, capsys, monkeypatch):
    pytest.importorskip("discord")
    from kling3_discord.app import main

    monkeypatch.setenv("DISCORD_TOKEN", "fake-bot-token")
    assert main([]) == 2
    stderr = capsys.readouterr().err
    assert "KLING_API_KEY" in stderr and "--sandbox" in stderr and "api_key=" not in stderr


def test_the_discord_help_does_not_promise_no_network(capsys):
    from kling3_tools.cli import main

    with pytest.raises(SystemExit):
        main(["discord", "--help"])
    sandbox_help = " ".join(capsys.readouterr().out.split())
    assert "no network" not in sandbox_help and "no Kling key" in sandbox_help


async def test_a_text_only_bot_starts_without_voice_warnings(sandbox, tmp_path, caplog):
    pytest.importorskip("discord")
    import discord
    from kling3_discord import KlingBot, opened

    from .support import bot_settings

    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = True  # as a fresh process finds them
    with caplog.at_level("WARNING"):
        async with opened(bot_settings(sandbox, tmp_path)) as bot:
            assert isinstance(bot, KlingBot)
    assert "voice will NOT be supported" not in caplog.text


@pytest.mark.process
def test_a_sandbox_video_outlives_the_command_that_made_it(tmp_path):
    made = run(ENTRY_POINTS["kling3"], "--sandbox", "generate", "A fox", "--wait", home=tmp_path)
    assert made.returncode == 0, made.stderr
    kept = Path(made.stdout.strip())
    assert kept.is_file() and kept.stat().st_size > 0  # a path that lasts, not a URL served by a process now gone
    listed = run(ENTRY_POINTS["kling3"], "--sandbox", "tasks", home=tmp_path)
    assert str(kept) in listed.stdout


async def test_a_download_is_noted_as_the_tasks_local_path(sandbox, tmp_path):
    from kling3_tools import GenerateRequest, KlingService

    from .conftest import set_options
    from .support import settings_for

    set_options(sandbox, finish_seconds=0.2)
    async with KlingService.open(settings_for(sandbox, tmp_path / "t.db")) as service:
        record = await service.submit(GenerateRequest.build(type="std-text-to-video", prompt="x"))
        task = await service.wait(record.task_id, timeout=30)
        saved = await service.download(task, f"{tmp_path / 'out'}/")
        assert (await service.get(record.task_id)).local_path == str(saved.resolve())


def test_models_piped_is_one_tab_separated_line_per_type_and_on_80_columns_nothing_is_cut(capsys, monkeypatch):
    from rich.console import Console

    from kling3_tools.cli import output

    code, out, _ = kling3(capsys, "models")
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(catalog.PRICES)  # the types the configured provider offers
    assert all(len(line.split("\t")) == 5 for line in lines) and lines[0].split("\t")[1] == "text-to-video"
    terminal = Console(force_terminal=True, width=80, highlight=False, markup=False, emoji=False, color_system=None)
    monkeypatch.setattr(output, "out", terminal)
    with terminal.capture() as shown:
        assert kling3(capsys, "models")[0] == 0
    assert "…" not in shown.get() and max(len(line) for line in shown.get().splitlines()) <= 80


async def test_a_sandbox_story_begun_by_one_process_is_finished_by_the_next(no_key, tmp_path):
    pytest.importorskip("av")
    from kling3_tools import KlingService, Settings
    from kling3_tools.domain.story import Story

    from .support import LIGHTHOUSE

    settings = Settings.load(sandbox={"finish_seconds": 0.3})
    (tmp_path / "lighthouse.toml").write_text(LIGHTHOUSE)
    story = Story.from_toml(tmp_path / "lighthouse.toml")
    async with KlingService.open(settings, sandbox=True) as earlier, earlier.polling():
        record = await earlier.start_story(story, film_path=str(tmp_path / "film.mp4"))
        await eventually(lambda: first_shot_done(earlier, record.story_id), timeout=30)
    async with KlingService.open(settings, sandbox=True) as later, later.polling():  # another port
        await eventually(lambda: story_ended(later, record.story_id), timeout=60)
        ended = await later.stories.get(record.story_id)
    assert ended.state == "succeeded", ended.summary()
    assert (tmp_path / "film.mp4").stat().st_size > 0


async def first_shot_done(service, story_id: str) -> bool:
    record = await service.stories.get(story_id)
    return record.shots["storm"].state == "succeeded"


async def story_ended(service, story_id: str) -> bool:
    return (await service.stories.get(story_id)).state != "running"
