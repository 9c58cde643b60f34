"""Every example runs as pasted: with no key and no arguments, from another folder, on the embedded sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PYTHON_EXAMPLES = sorted(EXAMPLES.glob("*.py"))


def no_key_env(home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KLING_", "DISCORD_"))}
    return {**clean, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


@pytest.mark.process
@pytest.mark.parametrize("example", PYTHON_EXAMPLES, ids=lambda path: path.name)
def test_each_python_example_runs_with_no_key_from_any_folder(example, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, str(example)],
        cwd=elsewhere,
        env=no_key_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.process
@pytest.mark.parametrize("story", sorted(EXAMPLES.glob("*.toml")), ids=lambda path: path.name)
def test_each_story_plans_with_no_key(story, tmp_path):
    native = tomllib.loads(story.read_text()).get("mode") == "native"  # Kling's own API cuts the shots itself
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kling3_tools",
            *(["--provider", "kling"] if native else []),
            "story",
            "plan",
            str(story),
        ],
        env=no_key_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(story.read_text())["title"] in result.stdout


def test_the_mcp_client_config_starts_an_installed_console_script_on_the_sandbox():
    import importlib.metadata

    servers = json.loads((EXAMPLES / "claude_desktop_config.json").read_text())["mcpServers"]
    scripts = {entry.name for entry in importlib.metadata.entry_points(group="console_scripts")}
    assert {server["command"] for server in servers.values()} <= scripts
    assert all("--sandbox" in server["args"] and "env" not in server for server in servers.values())


def test_there_are_examples_of_each_kind():
    assert {path.name for path in PYTHON_EXAMPLES} >= {"quickstart.py", "story.py", "mcp_client.py"}
