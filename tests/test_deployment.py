"""The shipped compose.yaml: every kling3 service runs a command the CLI accepts, wired to one PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import yaml

from kling3_tools.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_compose_services_run_real_commands_on_one_postgres():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "migrate", "poller", "bot", "mcp"} <= set(services)
    parser = build_parser()
    commands = {}
    for name in ("migrate", "poller", "bot", "mcp"):
        service = services[name]
        args = parser.parse_args(service["command"])  # a typo here would exit the test
        commands[name] = args.command
        assert service["environment"]["KLING_STORE__URL"].startswith("postgresql://")
        assert service["environment"]["KLING_STORE__URL"].endswith("@postgres:5432/kling3")
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert commands == {"migrate": "store", "poller": "poller", "bot": "discord", "mcp": "mcp"}
    assert services["poller"]["deploy"]["replicas"] >= 2
    assert "KLING_MCP__HTTP_TOKEN" in services["mcp"]["environment"]  # it listens beyond loopback
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_image_installs_every_front_end_postgres_and_storage():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '".[mcp,discord,postgres,storage]"' in dockerfile
    assert "USER kling3" in dockerfile
