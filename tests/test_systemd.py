"""The systemd unit example: reload by SIGHUP, hardening, flags the daemon accepts."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netmon_exporter.daemon import DEFAULT_PORT, build_arg_parser

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "netmon-exporter.service"
BINARY = "/opt/netmon-exporter/bin/netmon-exporter"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (keys may repeat; backslash continues a line)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    logical = re.sub(r"\\\n\s*", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def test_reload_sends_sighup(unit: dict[str, dict[str, list[str]]]) -> None:
    assert unit["Service"]["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_config_is_checked_before_start(unit: dict[str, dict[str, list[str]]]) -> None:
    (pre,) = unit["Service"]["ExecStartPre"]
    (start,) = unit["Service"]["ExecStart"]
    pre_args, start_args = shlex.split(pre), shlex.split(start)
    assert pre_args[0] == start_args[0] == BINARY
    assert "--config.check" in pre_args
    config = [a for a in start_args if a.startswith("--config.file=")]
    assert config and config[0] in pre_args


def test_exec_start_flags_are_accepted_by_the_daemon(unit: dict[str, dict[str, list[str]]]) -> None:
    for line in unit["Service"]["ExecStart"] + unit["Service"]["ExecStartPre"]:
        args = build_arg_parser().parse_args(shlex.split(line)[1:])
        assert args.config_file == "/etc/netmon-exporter/config.yaml"
    start = build_arg_parser().parse_args(shlex.split(unit["Service"]["ExecStart"][0])[1:])
    assert start.listen_address == f":{DEFAULT_PORT}"


def test_runs_unprivileged_and_hardened(unit: dict[str, dict[str, list[str]]]) -> None:
    svc = unit["Service"]
    assert svc["User"] == ["netmon"] and svc["Group"] == ["netmon"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
        "StateDirectory": "netmon-exporter",
    }
    for key, value in expected.items():
        assert svc.get(key) == [value], key
    assert "AF_INET" in svc["RestrictAddressFamilies"][0]
    assert svc["Restart"] == ["on-failure"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def _installed_root(tmp_path: Path) -> tuple[Path, Path]:
    """A root file system laid out as deploy/README.md installs the service.

    The unit is verified byte for byte as shipped: no path in it is rewritten. Its
    commands exist where the README puts them (the virtual environment in
    /opt/netmon-exporter, whose entry point is this environment's; /bin/kill from this
    host) and the units it orders itself against are this host's own.
    """
    exe = shutil.which("netmon-exporter", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("netmon-exporter entry point not installed in this environment")
    host_units = Path("/usr/lib/systemd/system")
    kill = shutil.which("kill", path="/usr/bin:/bin")
    if not host_units.is_dir() or kill is None:
        pytest.skip("no systemd unit directory or /bin/kill on this host")
    root = tmp_path / "root"
    binary = root / BINARY.lstrip("/")
    binary.parent.mkdir(parents=True)
    shutil.copy2(exe, binary)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    shutil.copy2(Path(kill).resolve(), root / "usr" / "bin" / "kill")
    shutil.copytree(host_units, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    unit = root / "etc" / "systemd" / "system" / UNIT.name
    unit.parent.mkdir(parents=True)
    shutil.copy2(UNIT, unit)
    assert unit.read_bytes() == UNIT.read_bytes()
    return root, unit


@needs_systemd_analyze
def test_systemd_analyze_verify_as_shipped(tmp_path: Path) -> None:
    root, unit = _installed_root(tmp_path)
    out = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.strip() == "", out.stderr


@needs_systemd_analyze
def test_systemd_analyze_verify_catches_a_wrong_path(tmp_path: Path) -> None:
    """The check above is not vacuous: a unit naming a binary that is not installed fails."""
    root, unit = _installed_root(tmp_path)
    unit.write_text(UNIT.read_text().replace(BINARY, "/opt/netmon/bin/netmon-exporter"))
    out = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "/opt/netmon/bin/netmon-exporter is not executable" in out.stderr


@needs_systemd_analyze
def test_systemd_exposure_level_is_low(tmp_path: Path) -> None:
    root, unit = _installed_root(tmp_path)
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0 and "offline" in out.stderr:
        pytest.skip("systemd-analyze security --offline not supported here")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) <= 2.5


def test_stop_signal_goes_to_the_daemon_only() -> None:
    """KillMode=mixed: the daemon coordinates its workers' shutdown within TimeoutStopSec."""
    assert "\nKillMode=mixed\n" in UNIT.read_text()
