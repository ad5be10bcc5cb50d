"""docker-compose.yml and the Dockerfile: references resolve and the services fit together.

There is no Docker engine here; ``docker compose config`` is run only where the compose
client exists. Everything else is checked by parsing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from netmon_exporter.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
EXPORTER = "netmon-exporter"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) for every short-syntax volume of a service."""
    out = []
    for v in service.get("volumes", []):
        parts = v.split(":")
        out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def _published(service: dict[str, Any]) -> list[tuple[int, int]]:
    out = []
    for p in service.get("ports", []):
        host, container = str(p).rsplit(":", 1)
        out.append((int(host.rsplit(":", 1)[-1]), int(container)))
    return out


def _mounted_file(compose: dict[str, Any], service: str, target: str) -> Path:
    for source, tgt, _ in _mounts(compose["services"][service]):
        if tgt == target:
            return (ROOT / source).resolve()
        if target.startswith(tgt + "/"):
            return (ROOT / source / target[len(tgt) + 1 :]).resolve()
    raise AssertionError(f"{service} does not mount {target}")


def test_expected_services(compose: dict[str, Any]) -> None:
    assert {EXPORTER, "prometheus", "alertmanager", "grafana", "capture"} <= set(
        compose["services"]
    )


def test_every_bind_mount_exists_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    used = set()
    for name, svc in compose["services"].items():
        for source, target, mode in _mounts(svc):
            assert target.startswith("/"), f"{name}: {target}"
            assert mode in {"ro", "rw"}, f"{name}: {mode}"
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared, "declared volumes not used by any service"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} not pinned"


def test_dependencies_and_ports_are_consistent(compose: dict[str, Any]) -> None:
    services = compose["services"]
    host_ports: list[int] = []
    for name, svc in services.items():
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        host_ports += [h for h, _ in _published(svc)]
    assert len(host_ports) == len(set(host_ports)), "a host port is published twice"
    assert (9864, 9864) in _published(services[EXPORTER])
    assert (9090, 9090) in _published(services["prometheus"])
    assert (9093, 9093) in _published(services["alertmanager"])
    assert (3000, 3000) in _published(services["grafana"])


def test_exporter_service(compose: dict[str, Any]) -> None:
    svc = compose["services"][EXPORTER]
    assert svc["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    assert "/-/healthy" in " ".join(svc["healthcheck"]["test"])
    assert "--web.listen-address=:9864" in svc["command"]
    config_flag = next(a for a in svc["command"] if a.startswith("--config.file="))
    config_path = _mounted_file(compose, EXPORTER, config_flag.split("=", 1)[1])
    cfg = parse_config(config_path.read_text(), check_paths=False)
    # The watched directory is the volume the capture side-car writes to.
    capture_mounts = {t: s for s, t, _ in _mounts(compose["services"]["capture"])}
    exporter_mounts = {t: s for s, t, _ in _mounts(svc)}
    target = str(cfg.capture.directory)
    assert exporter_mounts.get(target) == capture_mounts.get(target) == "captures"
    state_mount = next(t for t in exporter_mounts if str(cfg.state.directory).startswith(t))
    assert exporter_mounts[state_mount] == "netmon-state"
    assert str(cfg.output.directory).startswith(state_mount)
    # Detections go to the compose Alertmanager, on a port it listens on.
    (url,) = cfg.alertmanager.urls
    parts = urlsplit(url)
    assert parts.hostname == "alertmanager" and parts.port == 9093


def test_prometheus_is_wired_to_the_stack(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    cfg_path = _mounted_file(compose, "prometheus", "/etc/prometheus/prometheus.yml")
    cfg = yaml.safe_load(cfg_path.read_text())
    # rule_files are relative to the config file: resolve them inside the container.
    for rule in cfg["rule_files"]:
        in_container = os.path.normpath(os.path.join("/etc/prometheus", rule))
        assert _mounted_file(compose, "prometheus", in_container).is_file(), rule
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    (target,) = [t for sc in jobs["netmon"]["static_configs"] for t in sc["targets"]]
    assert target == f"{EXPORTER}:9864"
    am_targets = [
        t
        for a in cfg["alerting"]["alertmanagers"]
        for sc in a["static_configs"]
        for t in sc["targets"]
    ]
    assert am_targets == ["alertmanager:9093"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    am = compose["services"]["alertmanager"]
    am_flag = next(a for a in am["command"] if a.startswith("--config.file="))
    assert _mounted_file(compose, "alertmanager", am_flag.split("=", 1)[1]).is_file()


def test_grafana_is_wired_to_the_stack(compose: dict[str, Any]) -> None:
    ds = yaml.safe_load(
        _mounted_file(
            compose, "grafana", "/etc/grafana/provisioning/datasources/prometheus.yml"
        ).read_text()
    )
    url = urlsplit(ds["datasources"][0]["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    prov = yaml.safe_load(
        _mounted_file(
            compose, "grafana", "/etc/grafana/provisioning/dashboards/netmon.yml"
        ).read_text()
    )
    path = prov["providers"][0]["options"]["path"]
    assert sorted(p.name for p in _mounted_file(compose, "grafana", path).glob("*.json"))
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert _mounted_file(compose, "grafana", home).is_file()


def test_dockerfile_runs_unprivileged_with_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms and all(re.search(r":\d+\.\d+\.\d+", f) for f in froms), froms
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*", text, flags=re.M)
    assert "/-/healthy" in text
    assert re.search(r"^EXPOSE 9864$", text, flags=re.M)
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), flags=re.M)
    for src in copied:
        for path in src.split():
            top = path.split("/")[0]
            assert top not in ignored, f".dockerignore excludes {path}, which the build copies"


def _compose_client() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_client(), reason="no docker compose client here")
def test_docker_compose_config_accepts_the_file() -> None:
    out = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
