"""The layout holds: no import circle, no front end reached from the core, small files, our own names in the
wheel, and the request's fields declared once for every front end."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"kling3_tools": ROOT / "kling3_tools", "kling3_discord": ROOT / "bots" / "kling3_discord"}
FRONT_ENDS = ("kling3_tools.__main__", "kling3_tools.cli", "kling3_tools.mcp", "kling3_discord")
MAX_LINES = 350
# Each folder is a layer and imports only from those below it; `config` and `version` are read by all but the
# domain, and the modules left at the top (`parts`, `service`, `launch`) put the layers together for front ends.
LAYERS = ("domain", "adapters", "workflows")
SHARED = {"kling3_tools.config", "kling3_tools.config_sections", "kling3_tools.config_sources", "kling3_tools.version"}


def is_front_end(module: str) -> bool:
    return any(module == front or module.startswith(front + ".") for front in FRONT_ENDS)


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports anywhere in its file (inside functions and for type checking too): an
    import of a package's attribute counts as one of the package, an import of a submodule as one of that
    module and of the packages above it (their `__init__` runs first), except the packages `name` is in."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    edges = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:  # importing a.b.c runs a/__init__ and a/b/__init__ first
            parts = target.split(".")
            edges |= {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
    return {edge for edge in edges if edge in known and edge != name and not name.startswith(edge + ".")}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_the_import_graph_has_no_circle():
    edges = graph()
    assert "kling3_tools.adapters.client" in edges["kling3_tools.service"]  # the walk sees real imports
    circles = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def layer_of(module: str) -> int | None:
    """The layer's rank (domain 0, adapters 1, workflows 2), or None above them (the top and front ends)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if parts[0] == "kling3_tools" and len(parts) > 1 and parts[1] in LAYERS else None


def test_each_layer_imports_only_the_layers_below_it():
    edges = graph()
    assert edges["kling3_tools.workflows.spending"] & {"kling3_tools.adapters.client", "kling3_tools.domain.ledger"}
    upward = []
    for module, targets in edges.items():
        rank = layer_of(module)
        if rank is None:
            continue
        allowed_shared = SHARED if rank > 0 else set()
        for target in targets - allowed_shared - {f"kling3_tools.{layer}" for layer in LAYERS}:
            target_rank = layer_of(target)
            if target_rank is None or target_rank > rank:
                upward.append((module, target))
    assert upward == []


def test_the_core_never_imports_a_front_end():
    for module, targets in graph().items():
        if is_front_end(module):
            continue
        assert not {t for t in targets if is_front_end(t)}, module


def test_no_file_is_long():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.process
def test_the_wheel_installs_only_our_own_top_level_names(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {n for n in names if not n.endswith(".dist-info")} == {"kling3_tools", "kling3_discord"}
    assert "kling3_discord/commands.py" in zipfile.ZipFile(wheel).namelist()
    assert "kling3_tools/mcp/player/player.html" in zipfile.ZipFile(wheel).namelist()  # the in-chat player


A_NEW_FIELD = """
import asyncio, json

from pydantic import Field, create_model

from kling3_tools.domain import catalog, models

models.GenerateRequest = create_model(
    "GenerateRequest",
    __base__=models.GenerateRequest,
    seed=(int | None, Field(default=None, ge=0, le=99, description="Random seed; the same seed, the same video.")),
)
catalog._MODE_FIELDS = {mode: fields | {"seed"} for mode, fields in catalog._MODE_FIELDS.items()}
GenerateRequest = models.GenerateRequest
from kling3_tools.adapters.providers import Kling3Api
Kling3Api.takes_fields = Kling3Api.takes_fields | {"seed"}  # a provider declares what its format takes
seen = {}

# The Python API: the model takes it and sends it.
request = GenerateRequest.build(type="pro-text-to-video", prompt="a fox", seed=7)
seen["payload"] = request.to_payload()["seed"]
seen["same_again"] = GenerateRequest.fields_of(request.recorded())["seed"]

# The CLI: a flag, read into the request.
from kling3_tools.cli.parser import build_parser
args = build_parser().parse_args(["generate", "a fox", "--seed", "7"])
seen["cli"] = GenerateRequest.fields_of(vars(args))["seed"]

# MCP: a parameter of generate_video with the model's bounds, taken by the resolver.
import tempfile
from kling3_tools.config import Settings
from kling3_tools.mcp.serve import loaded_server

from mcp import Client

async def listed_and_made():
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.load(store={"url": f"sqlite:///{folder}/tasks.db"})
        async with loaded_server(settings, sandbox=True) as server, Client(server) as client:
            tools = {tool.name: tool for tool in await server.list_tools()}
            made = await client.call_tool(
                "generate_video", {"type": "pro-text-to-video", "prompt": "a fox", "seed": 7, "wait_seconds": 0}
            )
            record = await server.deps.service.get(made.structured_content["task_id"])
            return tools, record.request["seed"]

tools, seen["mcp_request"] = asyncio.run(listed_and_made())
schema = tools["generate_video"].input_schema["properties"]["seed"]
seen["mcp"] = [s.get("maximum") for s in schema["anyOf"] if "maximum" in s]

# Discord: an option of every spending command, bounded as the model says.
from kling3_discord.commands import SPENDING_COMMANDS, spending_command

seen["discord"] = {}
for spec in SPENDING_COMMANDS:
    option = next(p for p in spending_command(None, spec).parameters if p.name == "seed")
    seen["discord"][spec.name] = [option.min_value, option.max_value, option.description]
print(json.dumps(seen))
"""


@pytest.mark.process
def test_a_field_added_to_the_request_model_reaches_every_front_end():
    pytest.importorskip("discord")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(A_NEW_FIELD)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    import json

    seen = json.loads(result.stdout)
    assert seen["payload"] == seen["same_again"] == seen["cli"] == seen["mcp_request"] == 7
    assert seen["mcp"] == [99]
    assert seen["discord"] == {
        name: [0, 99, "Random seed; the same seed, the same video"]
        for name in ("generate", "animate", "reference", "motion", "edit")
    }


def test_the_poller_command_finds_discord_delivery_through_an_entry_point_not_an_import():
    assert not {target for target in graph()["kling3_tools.cli.workers"] if target.startswith("kling3_discord")}


def test_only_parts_knows_the_embedded_sandbox():
    """The sandbox's options are settings and `kling3 sandbox` serves one; otherwise `parts` alone opens one and
    hands out an endpoint, so nothing above it knows the sandbox exists."""
    allowed = {"kling3_tools.parts", "kling3_tools.config", "kling3_tools.cli.offline"}
    for module, targets in graph().items():
        if not module.startswith("kling3_tools.adapters.sandbox") and module not in allowed:
            assert not {t for t in targets if t.startswith("kling3_tools.adapters.sandbox")}, module


def test_test_modules_share_helpers_only_through_support_and_the_harness():
    """A test module imports no other test module, and benchmarks nothing from tests/ (what both need is in
    `harness/`)."""
    found = []
    for path in [*(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                names = [alias.name for alias in node.names]
                if (
                    module.startswith("tests")
                    or (path.parent.name == "benchmarks" and node.level and module == ".")
                    or any(n.startswith("test_") for n in [module.lstrip("."), *names])
                    or "test_" in module
                ):
                    found.append((path.name, module))
    assert found == []
