"""Flags behave as Prometheus's do (issue 14): whole names only, each once, every one helped."""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from netmon_exporter import build_info as build_info_module
from netmon_exporter.build_info import BuildInfo, from_file, from_git
from netmon_exporter.daemon import build_arg_parser, web_urls

from .integration.daemon_process import DaemonProcess


def parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        build_arg_parser().parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--config.ch"],
        ["--config.f=x.yaml"],
        ["--web.listen=:1"],
        ["--log.lev=debug"],
        ["--web.config=web.yml"],
    ],
)
def test_abbreviations_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert "unrecognized arguments" in parse_error(argv, capsys)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["--config.file=a.yaml", "--config.file", "b.yaml"],
            "flag --config.file given more than once ('a.yaml', then 'b.yaml'); give it once",
        ),
        (["--log.level=debug", "--log.level=info"], "flag --log.level given more than once"),
        (["--web.listen-address=:1", "--web.listen-address=:2"], "--web.listen-address given"),
        (["--config.check", "--config.check"], "flag --config.check given more than once;"),
        (["--web.route-prefix=/a", "--web.route-prefix=/b"], "--web.route-prefix given"),
    ],
)
def test_a_repeated_flag_is_an_error(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says in parse_error(argv, capsys)


def test_flags_parse_and_default() -> None:
    args = build_arg_parser().parse_args([])
    assert args.config_file == "config.yaml" and args.config_check is False
    assert args.listen_address == ":9864" and args.telemetry_path == "/metrics"
    assert args.external_url == "" and args.route_prefix is None
    assert (args.log_level, args.log_format) == ("info", "logfmt")
    args = build_arg_parser().parse_args(
        ["--config.check", "--web.external-url", "https://x/n/", "--log.level=debug"]
    )
    assert args.config_check is True and args.external_url == "https://x/n/"
    assert args.log_level == "debug"


def test_every_flag_has_help() -> None:
    parser = build_arg_parser()
    flags = [a for a in parser._actions if a.option_strings]
    assert {f.option_strings[0] for f in flags} >= {
        "--config.file",
        "--config.check",
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.config.file",
        "--web.external-url",
        "--web.route-prefix",
        "--log.level",
        "--log.format",
        "--version",
    }
    for action in flags:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
        assert len(action.help) > 20, action.option_strings
    text = parser.format_help()
    assert "debug, info, warn, error" in text and "logfmt, json" in text


def test_log_choices_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice: 'trace'" in parse_error(["--log.level=trace"], capsys)


# ---------------------------------------------------------------- external URL and route prefix


@pytest.mark.parametrize(
    ("external", "prefix", "want"),
    [
        (
            "https://netmon.example.com/netmon/",
            None,
            ("https://netmon.example.com/netmon", "/netmon"),
        ),
        ("https://netmon.example.com/", None, ("https://netmon.example.com", "/")),
        ("http://h:9000/a/b//", None, ("http://h:9000/a/b", "/a/b")),
        ("https://x.example.com/netmon/", "/other/", ("https://x.example.com/netmon", "/other")),
        ("https://x.example.com/netmon", "", ("https://x.example.com/netmon", "/")),
        ("https://x.example.com/", "netmon", ("https://x.example.com", "/netmon")),
    ],
)
def test_external_url_and_route_prefix_as_prometheus(
    external: str, prefix: str | None, want: tuple[str, str]
) -> None:
    assert web_urls(external, prefix, ":9864", False) == want


def test_external_url_defaults_to_this_host_and_port() -> None:
    import socket

    host = socket.gethostname()
    assert web_urls("", None, "127.0.0.1:9999", False) == (f"http://{host}:9999", "/")
    assert web_urls("", None, ":9864", True) == (f"https://{host}:9864", "/")


@pytest.mark.parametrize(
    ("external", "says"),
    [
        ('"https://x/"', "must not begin or end with quotes"),
        ("netmon.example.com", "is not an absolute http(s) URL"),
        ("ftp://x/", "is not an absolute http(s) URL"),
        ("https://user:secret@x/", "must not hold credentials"),
        ("https://x/?a=1", "must not have a query or fragment"),
    ],
)
def test_bad_external_urls_are_refused(external: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)) as exc:
        web_urls(external, None, ":1", False)
    assert "secret" not in str(exc.value)


# ---------------------------------------------------------------- version and build


def test_version_is_printed_as_prometheus_does() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netmon_exporter", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert re.fullmatch(
        r"netmon-exporter, version \d+\.\d+\.\d+\S* \(branch: \S+, revision: \S+\)\n"
        r"  build date:\s+\S+\n  python:\s+3\.\d+\.\d+\n  platform:\s+\S+\n",
        proc.stdout,
    ), proc.stdout


def test_build_info_comes_from_git_in_a_checkout() -> None:
    root = Path(build_info_module.__file__).resolve().parents[1]
    if not (root / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not running from a git checkout")
    info = from_git(root)
    assert info is not None
    assert re.fullmatch(r"[0-9a-f]{40}", info.revision)
    assert re.fullmatch(r"\d{8}-\d\d:\d\d:\d\d", info.build_date)


def test_build_info_from_the_build_file_else_unknown(tmp_path: Path) -> None:
    assert from_git(tmp_path) is None
    path = tmp_path / "BUILD_INFO.json"
    assert from_file(path) is None
    path.write_text(json.dumps({"revision": "abc123", "branch": "main", "build_date": "x"}))
    assert from_file(path) == BuildInfo(revision="abc123", branch="main", build_date="x")
    path.write_text("[]")
    assert from_file(path) is None
    assert BuildInfo().revision == BuildInfo().branch == "unknown"
    text = BuildInfo(revision="abc123", branch="main", build_date="d").version_text()
    assert (
        text.startswith("netmon-exporter, version ") and "(branch: main, revision: abc123)" in text
    )


def test_a_container_build_writes_the_commit_it_was_given(tmp_path: Path) -> None:
    """The image has no .git: its build passes --revision/--branch (Dockerfile ARGs), the
    file is package data (pip installs it), and the installed copy reports it."""
    out = tmp_path / "BUILD_INFO.json"
    build_info_module.main(["--revision", "0123abc", "--branch", "release-1", "--output", str(out)])
    got = from_file(out)
    assert got is not None and (got.revision, got.branch) == ("0123abc", "release-1")
    assert re.fullmatch(r"\d{8}-\d{2}:\d{2}:\d{2}", got.build_date)
    root = Path(build_info_module.__file__).resolve().parents[1]
    dockerfile = (root / "Dockerfile").read_text()
    assert "ARG REVISION" in dockerfile and "ARG BRANCH" in dockerfile
    assert '-m netmon_exporter.build_info \\\n      --revision "$REVISION" --branch "$BRANCH"' in (
        dockerfile
    )
    assert '"BUILD_INFO.json"' in (root / "pyproject.toml").read_text()


# ---------------------------------------------------------------- the real daemon

CONFIG = """\
capture:
  directory: captures
  min_age_seconds: 0
processing:
  workers: 1
output:
  directory: out
state:
  directory: state
"""


class TlsDaemon(DaemonProcess):
    """The daemon behind TLS, basic auth and a route prefix."""

    def __init__(self, config: Path, ca: Path, prefix: str, *args: str) -> None:
        super().__init__(config, *args)
        self.context = ssl.create_default_context(cafile=str(ca))
        self.prefix = prefix
        self.auth = "Basic " + base64.b64encode(b"prom:scrape").decode()

    @property
    def url(self) -> str:
        return f"https://{self.address}{self.prefix}"

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        req = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": self.auth}
        )
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.context) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


@pytest.fixture
def tls_site(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    from .test_web_config import make_cert

    (tmp_path / "captures").mkdir()
    (tmp_path / "config.yaml").write_text(CONFIG)
    make_cert(tmp_path, "ca", "netmon-test-ca")
    make_cert(tmp_path, "server", "localhost", "DNS:localhost,IP:127.0.0.1", ca="ca")
    hashed = bcrypt.hashpw(b"scrape", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prom: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
    yield tmp_path


def test_daemon_serves_under_the_route_prefix_with_the_web_config(tls_site: Path) -> None:
    d = TlsDaemon(
        tls_site / "config.yaml",
        tls_site / "ca.crt",
        "/netmon",
        f"--web.config.file={tls_site / 'web.yml'}",
        "--web.external-url=https://netmon.example.com/netmon/",
    )
    d.start()
    try:
        code, body = d.get("/metrics")
        assert code == 200 and "netmon_up" in body
        assert d.get("/-/healthy")[0] == 200
        d.prefix = ""
        assert d.get("/metrics")[0] == 404
        log = d.log_text()
        assert (
            "route_prefix=/netmon" in log
            and "external_url=https://netmon.example.com/netmon" in log
        )
    finally:
        d.stop()


def test_daemon_refuses_a_web_config_promtool_refuses(tls_site: Path) -> None:
    (tls_site / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  clent_auth_type: RequireAndVerifyClientCert\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "netmon_exporter",
            f"--config.file={tls_site / 'config.yaml'}",
            f"--web.config.file={tls_site / 'web.yml'}",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tls_site,
    )
    assert proc.returncode == 1
    assert "tls_server_config.clent_auth_type: unknown key (did you mean client_auth_type?)" in (
        proc.stderr
    )
