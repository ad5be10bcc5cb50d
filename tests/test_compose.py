"""docker-compose.yml, the Dockerfile and its lock file: references resolve, the services
fit together, and the stack can run unattended (health checks, start-up conditions, bounded
disk, no public ports, no default password, locked dependencies).

There is no Docker engine here. The compose file is validated by Debian's docker-compose
1.29 (`docker-compose config`, which checks it against the Compose schema without an
engine) where it is installed, and by ``docker compose config`` where that client exists;
everything else is checked by parsing, and the small programs the stack runs (the
alert-logger, Grafana's password guard) are run for real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement

from netmon_exporter.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "deploy" / "docker" / "requirements.txt"
GRAFANA_ENV = ROOT / "deploy" / "compose" / "grafana.env"
ALERT_LOGGER = ROOT / "deploy" / "alert-logger" / "alert_logger.py"
EXPORTER = "netmon-exporter"
EXPORTER_UID = 10001


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, access) for every short-syntax volume of a service."""
    out = []
    for v in service.get("volumes", []):
        parts = v.split(":")
        options = parts[2].split(",") if len(parts) > 2 else ["rw"]
        out.append((parts[0], parts[1], "ro" if "ro" in options else "rw"))
    return out


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) for every published port."""
    out = []
    for p in service.get("ports", []):
        parts = str(p).split(":")
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        out.append((address, int(parts[-2]) if len(parts) > 1 else 0, int(parts[-1])))
    return out


def _long_running(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("restart") != "no"}


def _one_shot(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("restart") == "no"}


def _mounted_file(compose: dict[str, Any], service: str, target: str) -> Path:
    for source, tgt, _ in _mounts(compose["services"][service]):
        if tgt == target:
            return (ROOT / source).resolve()
        if target.startswith(tgt + "/"):
            return (ROOT / source / target[len(tgt) + 1 :]).resolve()
    raise AssertionError(f"{service} does not mount {target}")


def test_expected_services(compose: dict[str, Any]) -> None:
    assert {
        EXPORTER,
        "prometheus",
        "alertmanager",
        "grafana",
        "capture",
        "node-exporter",
        "alert-logger",
        "captures-init",
    } <= set(compose["services"])


def test_every_bind_mount_exists_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    used = set()
    for name, svc in compose["services"].items():
        for source, target, mode in _mounts(svc):
            assert target.startswith("/"), f"{name}: {target}"
            assert mode in {"ro", "rw"}, f"{name}: {mode}"
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
                if source != "/":
                    assert mode == "ro", f"{name} mounts {source} writable"
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


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    host_ports: list[int] = []
    for name, svc in services.items():
        for address, host, _ in _published(svc):
            assert address == "127.0.0.1", f"{name} publishes port {host} on {address}"
            host_ports.append(host)
    assert len(host_ports) == len(set(host_ports)), "a host port is published twice"
    assert ("127.0.0.1", 9864, 9864) in _published(services[EXPORTER])
    assert ("127.0.0.1", 9090, 9090) in _published(services["prometheus"])
    assert ("127.0.0.1", 9093, 9093) in _published(services["alertmanager"])
    assert ("127.0.0.1", 3000, 3000) in _published(services["grafana"])
    for internal in ("node-exporter", "alert-logger"):
        assert not services[internal].get("ports"), internal
    # Prometheus's admin and lifecycle APIs stay off.
    assert not any("enable-lifecycle" in a for a in services["prometheus"]["command"])
    assert not any("enable-admin-api" in a for a in services["prometheus"]["command"])


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, svc in _long_running(compose).items():
        assert svc.get("restart") == "unless-stopped", name
        check = svc.get("healthcheck")
        assert check, f"{name} has no health check"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert {"interval", "timeout", "retries", "start_period"} <= set(check), name
        assert svc.get("logging", {}).get("options", {}).get("max-size"), f"{name}: logs unbounded"
    for name, svc in _one_shot(compose).items():
        assert "healthcheck" not in svc, name


def test_start_up_waits_on_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    one_shot = _one_shot(compose)
    seen = 0
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            expected = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert spec == {"condition": expected}, f"{name} -> {dep}: {spec}"
            seen += 1
    assert seen >= 5
    # The exporter must run whatever the state of the rest; Prometheus must be able to
    # alert about a broken exporter, so it does not wait for it either.
    assert set(services[EXPORTER]["depends_on"]) == {"captures-init"}
    assert EXPORTER not in services["prometheus"].get("depends_on", {})


def test_health_checks_probe_what_they_claim(compose: dict[str, Any]) -> None:
    s = compose["services"]
    exporter = " ".join(s[EXPORTER]["healthcheck"]["test"])
    assert "http://127.0.0.1:9864/health'" in exporter  # 503 when unhealthy
    assert "/-/ready" in " ".join(s["prometheus"]["healthcheck"]["test"])
    assert "/-/ready" in " ".join(s["alertmanager"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(s["grafana"]["healthcheck"]["test"])
    assert "/-/healthy" in " ".join(s["alert-logger"]["healthcheck"]["test"])
    # The side-car is healthy while tcpdump writes the files the exporter watches.
    capture = " ".join(s["capture"]["command"])
    probe = " ".join(s["capture"]["healthcheck"]["test"])
    written = re.search(r"-w '/captures/([a-z]+)-", capture)
    assert written and f"-name '{written.group(1)}-*.pcap'" in probe


def test_exporter_service(compose: dict[str, Any]) -> None:
    svc = compose["services"][EXPORTER]
    assert svc["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
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


def test_captures_cannot_fill_the_disk(compose: dict[str, Any]) -> None:
    """Either the exporter deletes what it processed, or tcpdump keeps a bounded ring."""
    svc = compose["services"][EXPORTER]
    config_flag = next(a for a in svc["command"] if a.startswith("--config.file="))
    cfg = parse_config(
        _mounted_file(compose, EXPORTER, config_flag.split("=", 1)[1]).read_text(),
        check_paths=False,
    )
    tcpdump = " ".join(compose["services"]["capture"]["command"])
    ring = re.search(r"-W \d+", tcpdump) and re.search(r"-C \d+", tcpdump)
    assert cfg.capture.after_processing == "delete" or ring, tcpdump
    assert "-G 60" in tcpdump  # a file a minute: the exporter's lag stays bounded
    # Deleting needs write access to the volume: it is mounted read-write and handed to
    # the exporter's user by the one-shot init service before anything starts.
    access = {t: mode for _, t, mode in _mounts(svc)}
    assert access[str(cfg.capture.directory)] == "rw"
    init = " ".join(compose["services"]["captures-init"]["command"])
    assert f"chown {EXPORTER_UID}:{EXPORTER_UID} {cfg.capture.directory}" in init
    assert f"--uid {EXPORTER_UID}" in DOCKERFILE.read_text()
    # Outputs are bounded too.
    assert cfg.output.retention_hours > 0 and cfg.output.max_flow_csv_files > 0


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
    (node,) = [t for sc in jobs["node"]["static_configs"] for t in sc["targets"]]
    host, port = node.split(":")
    assert host in compose["services"] and port == "9100"
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
    am = yaml.safe_load(
        _mounted_file(
            compose, "grafana", "/etc/grafana/provisioning/datasources/alertmanager.yml"
        ).read_text()
    )
    by_type = {d["type"]: d for d in am["datasources"]}
    assert by_type["alertmanager"]["jsonData"]["implementation"] == "prometheus"
    for source in am["datasources"]:
        url = urlsplit(source["url"])
        assert url.hostname == "alertmanager" and url.port == 9093, source["name"]
    # The plugin behind the findings table is installed, at a pinned version.
    plugin = compose["services"]["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    assert re.fullmatch(r"yesoreyeram-infinity-datasource \d+\.\d+\.\d+", plugin)
    assert "yesoreyeram-infinity-datasource" in by_type


def _grafana_guard(compose: dict[str, Any]) -> str:
    """Grafana's entrypoint script as the container's shell sees it ($$ -> $)."""
    entry = compose["services"]["grafana"]["entrypoint"]
    assert entry[:2] == ["sh", "-c"]
    return entry[2].replace("$$", "$")


def test_grafana_password_comes_from_an_env_file_without_fallback(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    (env_file,) = grafana["env_file"]
    assert (ROOT / env_file) == GRAFANA_ENV
    example = GRAFANA_ENV.with_name(GRAFANA_ENV.name + ".example")
    keys = dict(
        line.split("=", 1)
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert keys["GF_SECURITY_ADMIN_PASSWORD"] == ""  # to be set; no usable default
    ignored = (GRAFANA_ENV.parent / ".gitignore").read_text().split()
    assert GRAFANA_ENV.name in ignored
    text = COMPOSE.read_text()
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana.get("environment", {})
    assert ":-admin" not in text and "admin/admin" not in text


@pytest.mark.parametrize(
    ("password", "starts"), [(None, False), ("", False), ("short", False), ("x" * 16, True)]
)
def test_grafana_refuses_to_start_without_a_real_password(
    compose: dict[str, Any], tmp_path: Path, password: str | None, starts: bool
) -> None:
    script = _grafana_guard(compose).replace("exec /run.sh", f"exec {tmp_path}/run.sh")
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho grafana-started\n")
    (tmp_path / "run.sh").chmod(0o755)
    env = {"PATH": os.environ["PATH"]}
    if password is not None:
        env["GF_SECURITY_ADMIN_PASSWORD"] = password
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    if starts:
        assert out.returncode == 0 and out.stdout.strip() == "grafana-started", out.stderr
    else:
        assert out.returncode == 1 and "grafana-started" not in out.stdout
        assert "deploy/compose/grafana.env" in out.stderr


def test_dockerfile_runs_unprivileged_with_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms and all(re.search(r":\d+\.\d+\.\d+", f) for f in froms), froms
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    healthcheck = re.search(r"^HEALTHCHECK (.*\n)*?.*CMD (.*)$", text, flags=re.M)
    assert healthcheck and "http://127.0.0.1:9864/health'" in healthcheck.group(2)
    assert re.search(r"^EXPOSE 9864$", text, flags=re.M)
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"


def test_image_does_not_create_the_capture_directory() -> None:
    """A missing mount must be a missing directory (the daemon refuses to start), not an
    empty directory that looks healthy."""
    text = DOCKERFILE.read_text()
    instructions = re.sub(r"#.*", "", text)
    assert "/captures" not in re.sub(r"docker run .*", "", instructions)
    cfg = parse_config((ROOT / "deploy" / "docker" / "config.yaml").read_text(), check_paths=False)
    assert str(cfg.capture.directory) == "/captures"
    # The image's own config only reads captures, so a read-only mount works.
    assert cfg.capture.after_processing == "keep"


def test_image_installs_the_locked_dependencies() -> None:
    text = DOCKERFILE.read_text()
    assert "COPY deploy/docker/requirements.txt" in text
    assert re.search(r"pip install [^\n]*--require-hashes[^\n]*--no-deps", text)
    assert re.search(r"--no-deps --no-build-isolation[\s\\]*--no-index \.", text)
    # No other pip install pulls anything from an index.
    logical = re.sub(r"\\\n\s*", " ", text)
    installs = re.findall(r"pip install ([^&\n]*)", logical)
    assert len(installs) == 2 and all("--no-deps" in i for i in installs)


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from the lock file."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert m, f"unpinned or unhashed line in {LOCK.name}: {line}"
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        out[name] = (m.group(2), m.group(3).split())
    return out


def test_lock_pins_every_dependency_within_its_range_with_hashes() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = _lock()
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    for req in wanted:
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in lock, f"{req.name} is not in {LOCK}"
        version, hashes = lock[name]
        assert req.specifier.contains(version, prereleases=True), f"{req} vs {version}"
        assert hashes
    # Nothing of the dev extras sneaks into the image.
    for dev in ("pytest", "ruff", "mypy", "hypothesis"):
        assert dev not in lock


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


def test_alert_logger_logs_a_notification_and_answers_health(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-u", str(ALERT_LOGGER), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/healthy", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "alert-logger did not start"
                time.sleep(0.1)
        payload = {
            "receiver": "security",
            "status": "firing",
            "groupLabels": {"detector": "port_scan", "source": "10.0.0.66"},
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "NetmonPortScan", "source": "10.0.0.66"},
                    "annotations": {"summary": "port scan from 10.0.0.66"},
                    "startsAt": "2026-01-01T00:00:00Z",
                }
            ],
        }
        req = urllib.request.Request(
            f"{base}/security",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
        bad = urllib.request.Request(f"{base}/page", data=b"not json")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=5)
        assert err.value.code == 400
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert lines == [
        {
            "path": "/security",
            "receiver": "security",
            "status": "firing",
            "group_labels": {"detector": "port_scan", "source": "10.0.0.66"},
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "NetmonPortScan", "source": "10.0.0.66"},
                    "summary": "port scan from 10.0.0.66",
                    "starts_at": "2026-01-01T00:00:00Z",
                }
            ],
        }
    ]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_validates_the_file(tmp_path: Path) -> None:
    """Debian's docker-compose 1.29 checks the file against its Compose schema, no engine
    needed. It predates the top-level ``name`` and needs the env file to exist, so it gets
    a copy without ``name`` and with the example env file."""
    doc = yaml.safe_load(COMPOSE.read_text())
    assert doc.pop("name") == "netmon"
    example = GRAFANA_ENV.with_name(GRAFANA_ENV.name + ".example")
    doc["services"]["grafana"]["env_file"] = [str(example)]
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run(
        [
            "docker-compose",
            "--project-directory",
            str(ROOT),
            "-f",
            str(copy),
            "--profile",
            "capture",
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


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
