"""The Docker deployment files hold together: compose, Dockerfile, Prometheus and Grafana.

No Docker engine is needed. When a compose CLI is installed (`docker compose` or Debian's
`docker-compose`), its own `config -q` validation runs as well; without one, the same
interpolation rules are checked here instead, so this test never silently does less.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "freshrec.json"
DOCS = ROOT / "docs" / "docker.md"

APPS = {"ingest": 8001, "trainer": 8002, "ranker": 8000}
INFRA_HEALTHY = {"kafka", "redis", "prometheus"}
SECRETS = {"FRESHREC_API_KEYS", "GRAFANA_ADMIN_PASSWORD"}
CONDITIONS = {"service_healthy", "service_started", "service_completed_successfully"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def test_the_stack_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"kafka", "redis", *APPS, "prometheus", "grafana"}
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    assert services["redis"]["image"].startswith("redis:7")
    for name, service in services.items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert isinstance(check, dict), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
        assert "interval" in check and "retries" in check


def test_depends_on_uses_conditions(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must be a mapping with conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert spec.get("condition") in CONDITIONS, f"{name} → {target}: no condition"
            if target in INFRA_HEALTHY:
                assert spec["condition"] == "service_healthy", f"{name} → {target}"
    assert set(services["ingest"]["depends_on"]) == {"kafka"}
    assert set(services["trainer"]["depends_on"]) == {"kafka", "redis"}
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_host_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: volume source {source} missing"
            else:
                assert source in (dict.fromkeys(_named_volumes())), f"{name}: volume {source}"


def _named_volumes() -> list[str]:
    return list((yaml.safe_load(COMPOSE.read_text()).get("volumes") or {}).keys())


def test_app_services_run_freshrec_with_keys(services: dict[str, dict[str, Any]]) -> None:
    raw = COMPOSE.read_text()
    for name, port in APPS.items():
        service = services[name]
        assert service["command"] == ["freshrec", name]
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        env = _env(service)
        assert env[f"FRESHREC_{name.upper()}_PORT"] == str(port)
        assert env[f"FRESHREC_{name.upper()}_HOST"] == "0.0.0.0"
        assert env["FRESHREC_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["FRESHREC_REDIS_URL"].startswith("redis://redis:6379")
        assert env["FRESHREC_API_KEYS"].startswith("${FRESHREC_API_KEYS:?")
        assert any(str(p).endswith(f":{port}:{port}") for p in service["ports"])
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/readyz" in probe
    assert "FRESHREC_RECOMMEND_REQUIRES_KEY" in _env(services["ranker"])
    # every variable has a default or refuses to start; secrets always refuse
    for match in re.finditer(r"\$\{([A-Z_][A-Z0-9_]*)(:?[-?])?([^}]*)\}", raw):
        variable, operator = match.group(1), match.group(2)
        assert operator in (":-", ":?"), f"${{{variable}}} would silently be empty"
        if variable in SECRETS:
            assert operator == ":?", f"{variable} is a secret: no default"


def test_kafka_is_a_single_kraft_node(services: dict[str, dict[str, Any]]) -> None:
    env = _env(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters.startswith(f"{node}@kafka:")
    listener_ports = {}
    for item in env["KAFKA_LISTENERS"].split(","):
        name, _, address = item.partition("://")
        listener_ports[name] = address.rsplit(":", 1)[1]
    assert voters.rsplit(":", 1)[1] == listener_ports[controller]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://kafka:{listener_ports['PLAINTEXT']}"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert env["CLUSTER_ID"]


def test_dockerfile_installs_the_repo() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _ = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
    assert re.search(r"pip install \.", text)
    assert re.search(r"^USER freshrec$", text, re.M)
    # the torch pin is read out of pyproject.toml with this pattern
    pins = re.findall(r'^ *"(torch==[^"]*)",*$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert len(pins) == 1
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("**") + 1 :][:4] == [
        "!pyproject.toml",
        "!README.md",
        "!libs/",
        "!services/",
    ]


def test_prometheus_scrapes_the_three_services(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, port in APPS.items():
        targets = [t for sc in jobs[name]["static_configs"] for t in sc["targets"]]
        assert targets == [f"{name}:{port}"]
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
    mounts = services["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_grafana_provisioning_matches_the_mounts(services: dict[str, dict[str, Any]]) -> None:
    mounts = {
        str(v).split(":")[1]: str(v).split(":")[0]
        for v in services["grafana"]["volumes"]
        if str(v).startswith(".")
    }
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "freshrec.yml").read_text()
    )["providers"]
    path = providers[0]["options"]["path"]
    assert mounts[path] == "./deploy/grafana/dashboards"
    home = _env(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/{DASHBOARD.name}"

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    uid = datasources[0]["uid"]
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def _documented_metrics() -> dict[str, str]:
    """`name → kind` from the list at the top of docs/docker.md."""
    found = re.findall(r"^- `(freshrec_[a-z_]+)(?:\{[a-z_,]+\})?` \((\w+)", DOCS.read_text(), re.M)
    return dict(found)


def _dashboard_metrics() -> set[str]:
    documented = _documented_metrics()
    names = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"freshrec_[a-z_]+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                names.add(base if documented.get(base) == "histogram" else name)
    return names


def test_dashboard_metrics_are_the_documented_ones() -> None:
    documented = _documented_metrics()
    assert len(documented) >= 20
    assert _dashboard_metrics() == set(documented)


def test_dashboard_metrics_are_exported_by_the_code() -> None:
    defined: set[str] = set()
    for folder in ("libs", "services"):
        for path in (ROOT / folder).rglob("*.py"):
            defined.update(re.findall(r"[\"'](freshrec_[a-z_]+)[\"']", path.read_text()))
    missing = sorted(_dashboard_metrics() - defined)
    assert not missing, f"the dashboard plots metrics no code defines: {missing}"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_validates() -> None:
    """`config -q` of an installed compose CLI; the interpolation rules are checked above."""
    cli = _compose_cli()
    if cli is None:
        # No CLI on this machine: the structural tests above are the whole check. Assert
        # what the CLI would have been fed parses, so this test still tests something.
        assert yaml.safe_load(COMPOSE.read_text())["services"]
        return
    base_env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    secrets = {"FRESHREC_API_KEYS": "k1,k2", "GRAFANA_ADMIN_PASSWORD": "pw"}
    ok = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env={**base_env, **secrets},
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env={**base_env, "GRAFANA_ADMIN_PASSWORD": "pw"},
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "FRESHREC_API_KEYS" in refused.stderr
