"""`kling3` run as a real subprocess, the way a person runs it."""

from __future__ import annotations

import json
import subprocess

import pytest

from harness.helpers import kling3 as run_kling3
from kling3_tools.adapters.sandbox.app import SAMPLE_VIDEO
from kling3_tools.adapters.store.pg_schema import SCHEMA_VERSION

from .conftest import stats


def kling3(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_kling3(*args, **{"KLING_SANDBOX__FINISH_SECONDS": "0.5", **env})


@pytest.mark.process
def test_sandbox_generate_wait_download(tmp_path):
    target = tmp_path / "fox.mp4"
    result = kling3("--sandbox", "generate", "A red fox in the snow", "--wait", "--download", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(target)]  # the sandbox's URL dies with the command: not handed out
    assert target.read_bytes() == SAMPLE_VIDEO
    assert "Cost: 400 credits" in result.stderr
    assert result.stderr.index("Cost:") < result.stderr.index("Submitted")
    assert "Traceback" not in result.stderr


@pytest.mark.process
def test_json_is_one_object_and_nothing_else():
    result = kling3("--sandbox", "generate", "A fox", "-t", "o3-std-text-to-video", "-d", "4", "--json", "--wait")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "succeeded"
    assert data["consumed_credits"] == 144
    assert data["video_urls"][0].endswith(f"{data['task_id']}.mp4")


@pytest.mark.process
def test_generate_without_wait_prints_the_task_id():
    result = kling3("--sandbox", "generate", "A fox", "--no-sound")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("n75")
    assert "270 credits" in result.stderr and "silent" in result.stderr


@pytest.mark.process
def test_bad_input_exits_2_with_every_problem_and_no_traceback():
    result = kling3("--sandbox", "generate", " ", "-t", "o3-pro-text-to-video", "-d", "40", "--cfg-scale", "0.4")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "`prompt`" in result.stderr and "`duration`" in result.stderr and "cfg_scale" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Submitted" not in result.stderr


@pytest.mark.process
def test_unknown_flag_exits_2():
    assert kling3("generate", "x", "--colour", "red").returncode == 2


@pytest.mark.process
def test_wrong_key_exits_1_and_never_prints_it(sandbox):
    result = kling3("generate", "A fox", KLING_BASE_URL=sandbox.url, KLING_API_KEY="sk-wrong-secret-key")
    assert result.returncode == 1
    assert "API key is missing or invalid" in result.stderr
    assert "Traceback" not in result.stderr
    assert "sk-wrong-secret-key" not in result.stderr + result.stdout
    assert stats(sandbox)["tasks"] == 0


@pytest.mark.process
def test_no_key_at_all_exits_2_and_says_how_to_set_one():
    result = kling3("status", "n75x")
    assert result.returncode == 2
    assert "KLING_API_KEY" in result.stderr


@pytest.mark.process
def test_status_and_wait_against_a_running_sandbox(sandbox):
    env = {"KLING_BASE_URL": sandbox.url, "KLING_API_KEY": sandbox.api_key}
    task_id = kling3("generate", "A fox", "-t", "std-text-to-video", **env).stdout.strip()
    status = json.loads(kling3("status", task_id, "--json", **env).stdout)
    assert status["task_id"] == task_id and status["consumed_credits"] == 300
    waited = kling3("wait", task_id, **env)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip().endswith(f"/media/{task_id}.mp4")
    missing = kling3("status", "n75nope", **env)
    assert missing.returncode == 1 and "n75nope" in missing.stderr


@pytest.mark.process
@pytest.mark.parametrize(
    ("args", "credits"),
    [
        (("cost", "-t", "o3-pro-video-edit"), 435),
        (("cost", "-t", "pro-text-to-video", "-d", "10", "--no-sound"), 540),
        (("cost", "a prompt", "-t", "o3-pro-reference-to-video", "--ref-image", "https://e.com/a.png"), 360),
    ],
)
def test_cost_spends_nothing(args, credits):
    result = kling3(*args, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["credits"] == credits


@pytest.mark.process
def test_models_json_lists_all_twelve():
    data = json.loads(kling3("models", "--json").stdout)
    assert len(data["models"]) == 12
    edit = next(m for m in data["models"] if m["type"] == "o3-std-video-edit")
    assert edit["credits_default"] == 360 and edit["duration"] == "source video"


@pytest.mark.process
def test_help_explains():
    result = kling3("generate", "--help")
    assert result.returncode == 0
    for text in ("--wait", "--end-image", "--ref-image", "o3-pro-video-edit", "spends credits"):
        assert text in result.stdout or text in kling3("--help").stdout


@pytest.mark.process
def test_notify_webhook_needs_a_secret_before_anything_is_spent(sandbox):
    env = {"KLING_BASE_URL": sandbox.url, "KLING_API_KEY": sandbox.api_key}
    result = kling3("generate", "A fox", "--notify-webhook", "http://127.0.0.1:9/hook", **env)
    assert result.returncode == 2
    assert "webhook_secret" in result.stderr
    assert stats(sandbox)["tasks"] == 0


@pytest.mark.process
def test_notify_webhook_records_and_returns_at_once(sandbox):
    env = {"KLING_BASE_URL": sandbox.url, "KLING_API_KEY": sandbox.api_key, "KLING_POLLER__WEBHOOK_SECRET": "s"}
    result = kling3("generate", "A fox", "--notify-webhook", "http://127.0.0.1:9/hook", "--json", **env)
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    assert submitted["origin"] == {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}
    assert submitted["outcome"] is None
    listed = json.loads(kling3("tasks", "--json", **env).stdout)["tasks"]
    assert [t["task_id"] for t in listed] == [submitted["task_id"]]
    assert listed[0]["delivery"] == "pending"


@pytest.mark.process
def test_wait_records_the_result_and_a_stopped_wait_can_be_resumed(sandbox):
    env = {"KLING_BASE_URL": sandbox.url, "KLING_API_KEY": sandbox.api_key}
    waited = json.loads(kling3("generate", "First", "--wait", "--json", **env).stdout)
    task_id = kling3("generate", "Second", **env).stdout.strip()
    running = json.loads(kling3("tasks", "--status", "running", "--json", **env).stdout)["tasks"]
    assert [t["task_id"] for t in running] == [task_id]
    resumed = kling3("wait", task_id, **env)
    assert resumed.returncode == 0, resumed.stderr
    tasks = {t["task_id"]: t for t in json.loads(kling3("tasks", "--json", **env).stdout)["tasks"]}
    for done in (waited["task_id"], task_id):
        assert tasks[done]["outcome"] == "succeeded"
        assert tasks[done]["delivery"] == "delivered"
        assert tasks[done]["video_urls"][0].endswith(f"{done}.mp4")
    table = kling3("tasks", **env).stdout
    assert task_id in table and "succeeded" in table


@pytest.mark.process
def test_tasks_reads_the_local_store_without_a_key():
    result = kling3("tasks", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"tasks": [], "attempts": []}


def test_store_migrate_creates_then_keeps_the_postgres_schema(postgres_cluster):
    url = postgres_cluster.new_database()
    before = kling3("tasks", KLING_STORE__URL=url)
    assert before.returncode == 1 and "kling3 store migrate" in before.stderr and "Traceback" not in before.stderr
    first = kling3("store", "migrate", KLING_STORE__URL=url)
    assert first.returncode == 0, first.stderr
    assert f"schema version {SCHEMA_VERSION} (migrated from version 0)" in first.stdout
    again = kling3("store", "migrate", KLING_STORE__URL=url)
    assert f"schema version {SCHEMA_VERSION} (already current)" in again.stdout
    assert kling3("tasks", KLING_STORE__URL=url).returncode == 0


@pytest.mark.process
def test_store_migrate_on_sqlite_says_nothing_is_needed(tmp_path):
    result = kling3("store", "migrate", KLING_STORE__URL=f"sqlite:///{tmp_path}/t.db")
    assert result.returncode == 0 and "ready" in result.stdout
    assert (tmp_path / "t.db").is_file()


@pytest.mark.process
def test_workers_refuse_an_embedded_sandbox():
    result = kling3("--sandbox", "poller", "--workers", "2")
    assert result.returncode == 2 and "kling3 sandbox" in result.stderr


@pytest.mark.process
def test_store_prune_needs_at_least_a_day_and_says_what_it_deleted(tmp_path):
    env = {"KLING_STORE__URL": f"sqlite:///{tmp_path / 'tasks.db'}"}
    too_soon = kling3("store", "prune", "--older-than", "0.5", **env)
    assert too_soon.returncode == 2 and "at least 1 day" in too_soon.stderr
    pruned = kling3("store", "prune", "--older-than", "90d", **env)
    assert pruned.returncode == 0 and "Pruned 0 delivered tasks and 0 settled attempts" in pruned.stdout
    bad = kling3("store", "prune", "--older-than", "1", KLING_STORE__KEEP_DAYS="0.5", **env)
    assert bad.returncode == 2 and "keep_days" in bad.stderr
