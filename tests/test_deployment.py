"""What `deploy/` ships: compose files that validate (with `docker compose config` when docker has compose, else
read here), Kubernetes manifests valid against the API's schemas (offline), a pinned image, and a health probe
that answers for the container."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from harness.helpers import free_port
from kling3_tools.cli import build_parser
from kling3_tools.ops import probe

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # an old supported release and the newest the schemas know
SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$")


def compose(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return loaded


def docker_compose() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.process
@pytest.mark.parametrize("name", ["compose.yaml", "compose.workers.yaml"])
def test_every_compose_service_is_pinned_checked_and_given_secrets_as_files(name, tmp_path):
    if docker_compose():  # in a copy, with the secret files an operator writes first
        copy = tmp_path / "deploy"
        shutil.copytree(DEPLOY, copy)
        (copy / "secrets").mkdir(exist_ok=True)
        for secret in compose(name)["secrets"]:
            (copy / "secrets" / secret).write_text("x")
        env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "KLING3_IMAGE": "x:1", "KLING_STORE__URL": "postgresql://x@y/z"}
        done = subprocess.run(
            ["docker", "compose", "-f", str(copy / name), "config", "--quiet"], env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr
    services = compose(name)["services"]
    declared = set(compose(name)["secrets"])
    parser = build_parser()
    for service_name, service in services.items():
        image = service["image"]
        assert image and ":" in image and not image.endswith(":latest"), (service_name, image)
        assert service["healthcheck"].get("disable") or service["healthcheck"]["test"], service_name
        for variable, setting in service.get("environment", {}).items():
            assert not SECRET_ENV.search(variable), f"{service_name}: {variable} holds a secret in the environment"
            if variable.endswith("_FILE"):
                assert (
                    setting.startswith("/run/secrets/") and setting.removeprefix("/run/secrets/") in service["secrets"]
                )
            if variable == "KLING_STORE__URL":
                assert ":@" not in setting and not re.search(r"://[^/@]*:[^/@]*@", setting), "a password in the url"
        assert set(service.get("secrets", [])) <= declared
        if "command" in service and service_name != "postgres":
            parser.parse_args(service["command"])  # a typo here would exit the test
            assert service["healthcheck"].get("disable") or "/readyz" in service["healthcheck"]["test"]


def test_the_one_host_compose_runs_every_role_and_demands_only_what_each_uses():
    services = compose("compose.yaml")["services"]
    assert {"postgres", "migrate", "poller", "bot", "mcp"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:17.")
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("poller", "bot", "mcp"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["poller"]["deploy"]["replicas"] >= 2
    assert services["bot"]["profiles"] == ["discord"] and "discord_token" in services["bot"]["secrets"]
    assert services["mcp"]["profiles"] == ["mcp"] and "mcp_token" in services["mcp"]["secrets"]
    assert "discord_token" not in services["poller"]["secrets"] and "mcp_token" not in services["poller"]["secrets"]
    text = (DEPLOY / "compose.yaml").read_text()
    assert ":?" not in text  # nothing demands a token a service you do not start would use
    published = services["postgres"]["ports"][0]
    assert published.startswith("${PG_PUBLISH:-127.0.0.1:5432}")  # loopback unless other hosts must reach it


def test_workers_on_other_hosts_pull_the_image_and_name_the_shared_store():
    [(name, poller)] = compose("compose.workers.yaml")["services"].items()
    assert name == "poller" and "build" not in poller
    assert poller["image"].startswith("${KLING3_IMAGE:?")
    assert poller["environment"]["KLING_STORE__URL"].startswith("${KLING_STORE__URL:?")


def test_the_image_is_pinned_and_installs_what_every_role_needs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base[1])
    assert '-c deploy/constraints.txt ".[mcp,discord,postgres,storage,stories,metrics]"' in dockerfile
    assert "USER kling3" in dockerfile and "HEALTHCHECK" in dockerfile
    lines = [line for line in (DEPLOY / "constraints.txt").read_text().splitlines() if line and line[0] != "#"]
    pins = {normalized(line.split("==")[0]) for line in lines}
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=\s]+", line) for line in lines), "every line pins one version"
    from importlib.metadata import requires

    extras = {"mcp", "discord", "postgres", "storage", "stories", "metrics"}
    needed = set()
    for requirement in requires("kling3-tools") or []:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement)
        marker = re.search(r"extra == [\"']([^\"']+)", requirement)
        if name and (marker is None or marker[1] in extras):
            needed.add(normalized(name[0]))
    assert needed <= pins, needed - pins


def normalized(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_kubernetes_manifests_are_valid_against_the_api_schemas(version):
    for name, manifest in manifests():
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} ({manifest['kind']}): {exc.message} at {list(exc.path)}")


def test_the_kustomization_lists_every_manifest_but_the_secret_example():
    listed = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
    shipped = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(listed) == sorted(shipped)


def test_workers_are_probed_on_the_endpoints_and_run_a_command_the_cli_accepts():
    parser = build_parser()
    kinds = {}
    secret_keys = set(yaml.safe_load((DEPLOY / "k8s" / "secret.example.yaml").read_text())["stringData"])
    for name, manifest in manifests():
        kinds.setdefault(manifest["kind"], []).append(manifest["metadata"]["name"])
        if manifest["kind"] not in ("Deployment", "Job"):
            continue
        pod = manifest["spec"]["template"]["spec"]
        [container] = pod["containers"]
        parser.parse_args(container["args"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        for variable in container.get("env", []):
            assert not SECRET_ENV.search(variable["name"]), f"{name}: {variable['name']} in the environment"
        mounted = {item["key"] for volume in pod["volumes"] if "secret" in volume for item in volume["secret"]["items"]}
        assert mounted <= secret_keys
        if manifest["kind"] == "Deployment":
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert {"name": "metrics", "containerPort": 9464} in container["ports"]
    assert kinds["Job"] == ["kling3-migrate"]
    assert sorted(kinds["Deployment"]) == ["kling3-bot", "kling3-mcp", "kling3-poller"]


def test_the_container_probe_asks_the_process_and_passes_with_metrics_off(monkeypatch):
    monkeypatch.delenv("KLING_METRICS__LISTEN", raising=False)
    assert probe.main(["/readyz"]) == 0  # nothing to ask
    monkeypatch.setenv("KLING_METRICS__LISTEN", f"0.0.0.0:{free_port()}")
    assert probe.main(["/healthz"]) == 1  # nothing listens
