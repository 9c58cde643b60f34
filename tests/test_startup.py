"""Start-up kept honest without timing it: what `kling3 --help` and the MCP server import before their first
answer is checked against an allow-list, so a module that starts loading early is a test that fails (the
timings themselves are in `benchmarks/startup.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .test_mcp_server import server_env

PYTHON_PACKAGES = {"pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection"}

HELP_MODULES = {  # `kling3 --help`: the parser, built from the request model and the catalog; nothing else
    "kling3_tools",
    "kling3_tools.catalog",
    "kling3_tools.cli",
    "kling3_tools.cli.parser",
    "kling3_tools.errors",
    "kling3_tools.launch",
    "kling3_tools.mcp",  # its argument definitions only (the server module loads in `kling3 mcp`)
    "kling3_tools.models",
    "kling3_tools.version",
}

# What the MCP server may load before its first answer beyond the SDK's own modules (measured from a minimal
# one-tool server on the same SDK): the HTTP client (httpx imports rich, pygments and click when click is
# installed), the settings, the data folder, and these modules of ours. Never a front end's extra that this
# server does not use (PostgreSQL, object storage, PyAV, Pillow, discord).
MCP_EXTRA_PACKAGES = {
    "httpx", "httpcore", "h11", "certifi", "idna", "sniffio", "anyio",
    "pydantic_settings", "dotenv", "platformdirs", "rich", "pygments", "click", "markdown_it", "mdurl",
}  # fmt: skip
NEVER_AT_START = {
    "psycopg", "psycopg_pool", "obstore", "av", "numpy", "PIL", "discord", "boto3", "moto", "prometheus_client",
}  # fmt: skip


def imported(script: str, env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def packages(modules: set[str]) -> set[str]:
    tops = {name.split(".")[0] for name in modules}
    return {top for top in tops if top not in sys.stdlib_module_names and not top.startswith("_")}


def test_kling3_help_loads_only_the_parser_and_the_request_model():
    modules = imported(
        "import json, sys\nfrom kling3_tools.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
        "    pass\nprint(json.dumps(sorted(sys.modules)))"
    )
    assert packages(modules) - {"kling3_tools"} <= PYTHON_PACKAGES, packages(modules)
    assert {name for name in modules if name.startswith("kling3_tools")} == HELP_MODULES


def test_the_mcp_server_loads_nothing_it_does_not_use_before_its_first_answer(sandbox, tmp_path: Path):
    floor = imported(
        "import json, sys\nfrom mcp.server.mcpserver import MCPServer\nimport asyncio\n"
        "server = MCPServer('minimal')\nserver.add_tool(lambda a, b: a + b, name='add')\n"
        "asyncio.run(server.list_tools())\nprint(json.dumps(sorted(sys.modules)))"
    )
    ours = imported(
        "import asyncio, json, sys\nfrom kling3_tools.config import Settings\n"
        "from kling3_tools.mcp.serve import build_server, open_deps\n"
        "async def main():\n"
        "    async with open_deps(Settings.load(), sandbox=False) as deps:\n"
        "        await build_server(deps).list_tools()\n"
        "        print(json.dumps(sorted(sys.modules)))\n"
        "asyncio.run(main())",
        env=server_env(sandbox, tmp_path),
    )
    beyond = packages(ours) - packages(floor) - {"kling3_tools"}
    assert beyond <= MCP_EXTRA_PACKAGES, beyond - MCP_EXTRA_PACKAGES
    assert not packages(ours) & NEVER_AT_START
    assert not {name for name in ours if name.startswith(("kling3_tools.cli.", "kling3_tools.stories.media"))}
