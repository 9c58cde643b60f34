"""The docs stay true: the README is short, every code block in it and in Getting started is an example file
or runs here, and the generated reference pages match the code."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "getting-started.md"]
# Lines of shell blocks not run here: installing, the test command itself, and what needs Node or Discord.
NOT_RUN = re.compile(
    r"^(python3 -m venv|\. \.venv/bin/activate|pip install|\.venv/bin/python -m pytest"
    r"|npx @modelcontextprotocol/inspector|DISCORD_TOKEN=)"
)


def blocks(page: Path) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def included(text: str) -> str:
    """A block's text, or the file a `--8<--` line includes."""
    match = re.fullmatch(r'--8<-- "([^"]+)"\n', text)
    return (ROOT / match.group(1)).read_text() if match else text


def test_the_readme_is_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_and_json_block_is_an_example_file(page):
    examples = {path.read_text() for path in (ROOT / "examples").iterdir() if path.is_file()}
    code = [included(text) for language, text in blocks(page) if language in ("python", "json")]
    assert code and all(text in examples for text in code)


def shell_lines(page: Path) -> list[str]:
    shell = "".join(text for language, text in blocks(page) if language == "bash")
    return [stripped for line in shell.splitlines() if (stripped := line.split("  #")[0].strip())]


@pytest.mark.process
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_shell_line_runs_with_no_key_and_writes_nothing_where_it_runs(page, tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = home / ".local" / "share" / "kling3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLING_", "DISCORD_", "XDG_"))}
    env |= {"HOME": str(home), "KLING_SANDBOX__FINISH_SECONDS": "0.5"}
    ran = 0
    for line in shell_lines(page):
        command = line.split("&& ")[-1]  # the try-it line: the install is what the test environment did
        if NOT_RUN.match(command):
            continue
        words = shlex.split(command)
        assert words[0].split("/")[-1] == "kling3", line
        words = [os.path.abspath(ROOT / w) if w.startswith("examples/") else w for w in words[1:]]
        result = subprocess.run(
            [sys.executable, "-m", "kling3_tools", *words], cwd=elsewhere, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        ran += 1
    assert ran >= 2
    assert list(elsewhere.iterdir()) == []  # nothing left where the commands ran
    if "--sandbox" in " ".join(shell_lines(page)):
        assert {"sandbox-account.db", "sandbox-tasks.db", "sandbox-videos"} <= {p.name for p in data.iterdir()}


def test_the_files_the_try_it_paragraph_names_are_the_ones_the_sandbox_writes():
    from kling3_tools.adapters.sandbox import embedded
    from kling3_tools.adapters.store import SANDBOX_STORE

    text = (ROOT / "README.md").read_text()
    assert all(name in text for name in (embedded.ACCOUNT_FILE, embedded.VIDEOS, SANDBOX_STORE))


def test_the_generated_reference_pages_match_the_code():
    spec = importlib.util.spec_from_file_location("write_reference", ROOT / "scripts" / "write_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stale = [path for path, page in module.PAGES.items() if (ROOT / path).read_text() != page()]
    assert stale == [], "run: python scripts/write_reference.py"
