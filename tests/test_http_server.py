"""The HTTP endpoints on a real socket (port 0), including TLS and basic auth."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from netmon_exporter.exposition import RenderCache
from netmon_exporter.health import CheckResult, HealthReport
from netmon_exporter.http_server import (
    Endpoints,
    HttpLimits,
    HttpServer,
    ReloadOutcome,
    parse_listen_address,
)
from netmon_exporter.metrics import build_metrics
from netmon_exporter.web_config import AuthThrottle, WebConfig, WebConfigError, load_web_config


class State:
    def __init__(self) -> None:
        self.health = HealthReport("healthy", (CheckResult("capture_directory", True, True, "ok"),))
        self.ready = True
        self.reloads = 0
        self.reload_result = ReloadOutcome(True, "configuration reloaded")

    def reload(self) -> ReloadOutcome:
        self.reloads += 1
        return self.reload_result


def serve(
    state: State, web: WebConfig | None = None, path: str = "/metrics", route_prefix: str = "/"
) -> tuple[HttpServer, str]:
    registry = CollectorRegistry()
    build_metrics(registry)
    ep = Endpoints(
        registry=registry,
        health=lambda: state.health,
        ready=lambda: state.ready,
        reload=state.reload,
        telemetry_path=path,
        route_prefix=route_prefix,
    )
    server = HttpServer("127.0.0.1:0", ep, web or WebConfig())
    server.start()
    return server, f"{server.scheme}://{server.address}"


@pytest.fixture
def plain() -> Iterator[tuple[State, str]]:
    state = State()
    server, base = serve(state)
    yield state, base
    server.stop()


def fetch(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def test_metrics_endpoint_serves_catalogue(plain: tuple[State, str]) -> None:
    _, base = plain
    code, body, headers = fetch(base + "/metrics")
    assert code == 200
    assert "netmon_files_processed_total" in body
    assert headers["Content-Type"].startswith("text/plain")


def test_openmetrics_is_negotiated(plain: tuple[State, str]) -> None:
    _, base = plain
    code, body, headers = fetch(
        base + "/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    assert code == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_health_json_and_status_codes(plain: tuple[State, str]) -> None:
    state, base = plain
    code, body, _ = fetch(base + "/health")
    assert code == 200 and json.loads(body)["state"] == "healthy"
    state.health = HealthReport("degraded", (CheckResult("keeping_up", False, False, "slow"),))
    code, body, _ = fetch(base + "/health")
    assert code == 200 and json.loads(body)["checks"]["keeping_up"]["reason"] == "slow"
    state.health = HealthReport(
        "unhealthy", (CheckResult("capture_directory", False, True, "gone"),)
    )
    code, body, _ = fetch(base + "/health")
    assert code == 503 and json.loads(body)["state"] == "unhealthy"


def test_liveness_readiness(plain: tuple[State, str]) -> None:
    state, base = plain
    assert fetch(base + "/-/healthy")[0] == 200
    assert fetch(base + "/-/ready")[0] == 200
    state.ready = False
    assert fetch(base + "/-/ready")[0] == 503


def test_reload_is_post_only_and_reports_failures(plain: tuple[State, str]) -> None:
    state, base = plain
    code, _, headers = fetch(base + "/-/reload")
    assert code == 405 and "POST" in headers["Allow"]
    assert state.reloads == 0
    code, body, _ = fetch(base + "/-/reload", method="POST")
    assert code == 200 and json.loads(body)["status"] == "success"
    state.reload_result = ReloadOutcome(
        False, "capture.min_age_seconds: 400 is above the maximum 300"
    )
    code, body, _ = fetch(base + "/-/reload", method="POST")
    assert code == 500
    assert "capture.min_age_seconds" in json.loads(body)["message"]
    assert state.reloads == 2


def test_restart_required_is_reported(plain: tuple[State, str]) -> None:
    state, base = plain
    state.reload_result = ReloadOutcome(True, "reloaded", ("state.directory",))
    code, body, _ = fetch(base + "/-/reload", method="POST")
    assert code == 200 and json.loads(body)["restart_required"] == ["state.directory"]


def test_landing_page_and_404(plain: tuple[State, str]) -> None:
    _, base = plain
    code, body, _ = fetch(base + "/")
    assert code == 200 and 'href="/metrics"' in body and 'href="/health"' in body
    assert fetch(base + "/admin")[0] == 404
    assert fetch(base + "/metrics", method="DELETE")[0] == 405


def test_custom_telemetry_path() -> None:
    state = State()
    server, base = serve(state, path="/prom")
    try:
        assert fetch(base + "/prom")[0] == 200
        assert fetch(base + "/metrics")[0] == 404
        assert 'href="/prom"' in fetch(base + "/")[1]
    finally:
        server.stop()


def test_parse_listen_address() -> None:
    assert parse_listen_address(":9864") == ("0.0.0.0", 9864)
    assert parse_listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen_address("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError):
        parse_listen_address("localhost")


# ---------------------------------------------------------------- TLS and basic auth


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(d / "server.key"),
            "-out",
            str(d / "server.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (d / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  alice: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
    return d


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_tls_and_basic_auth(tls_files: Path) -> None:
    web = load_web_config(str(tls_files / "web.yml"))
    state = State()
    server, base = serve(state, web)
    ctx = ssl.create_default_context(cafile=str(tls_files / "server.crt"))
    try:
        assert base.startswith("https://")
        code, _, headers = fetch(base + "/metrics", context=ctx)
        assert code == 401 and "Basic" in headers["WWW-Authenticate"]
        bad = base64.b64encode(b"alice:wrong").decode()
        assert (
            fetch(base + "/metrics", headers={"Authorization": f"Basic {bad}"}, context=ctx)[0]
            == 401
        )
        good = base64.b64encode(b"alice:s3cret").decode()
        code, body, headers = fetch(
            base + "/metrics", headers={"Authorization": f"Basic {good}"}, context=ctx
        )
        assert code == 200 and "netmon_up" in body
        assert headers["X-Content-Type-Options"] == "nosniff"
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            fetch(base.replace("https://", "http://") + "/metrics")
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_web_config_is_accepted_by_promtool(tls_files: Path) -> None:
    proc = subprocess.run(
        ["promtool", "check", "web-config", str(tls_files / "web.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_web_config_errors(tmp_path: Path) -> None:
    f = tmp_path / "web.yml"
    f.write_text("basic_auth_users:\n  bob: plaintext\n")
    with pytest.raises(WebConfigError, match="bcrypt"):
        load_web_config(str(f))
    f.write_text("tls_server_config:\n  cert_file: x.crt\n")
    with pytest.raises(WebConfigError, match="key_file"):
        load_web_config(str(f))
    f.write_text("tls_config: {}\n")
    with pytest.raises(
        WebConfigError, match="tls_config: unknown key .did you mean tls_server_config"
    ):
        load_web_config(str(f))
    assert load_web_config("").ssl_context is None


# ---------------------------------------------------------------- protocol details


def test_keep_alive_gzip_name_filter_and_head(plain: tuple[State, str]) -> None:
    _, base = plain
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = gzip.decompress(resp.read()).decode()
        assert resp.status == 200 and resp.getheader("Content-Encoding") == "gzip"
        assert "netmon_up" in body
        # Same connection (HTTP/1.1 keep-alive): prometheus-client's name[] filter.
        conn.request("GET", "/metrics?name[]=netmon_up")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200 and "netmon_up" in body
        assert "netmon_files_processed_total" not in body
        conn.request("HEAD", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
        assert int(resp.getheader("Content-Length") or 0) > 0
    finally:
        conn.close()


# ---------------------------------------------------------------- the bcrypt cache and throttle


def test_auth_throttle_buckets() -> None:
    t = AuthThrottle(client_burst=3, client_rate=0.5, global_burst=5, global_rate=1.0)
    assert [t.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert t.take("a", 1.0) is False  # half a token back after one second
    assert t.take("a", 2.0) is True  # a whole one after two
    # Global: 5, minus 3, plus 2 refilled, minus 1 leaves 3 for "b" (whose own burst is 3).
    assert [t.take("b", 2.0) for _ in range(4)] == [True, True, True, False]
    t.give_back("b", 2.0)  # a right password returns its token
    assert t.take("b", 2.0) is True
    assert t.take("c", 2.0) is False  # the global bucket is empty for everyone
    assert t.take("c", 3.0) is True


def test_right_passwords_are_cached_wrong_ones_are_throttled() -> None:
    web = WebConfig(throttle=AuthThrottle(client_burst=2, client_rate=0.0, global_rate=0.0))
    web.users["alice"] = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    assert web.check_auth("alice", "s3cret", "10.0.0.1") is True
    assert web.precheck("alice", "s3cret", "10.0.0.1") is True  # cached: no bcrypt
    # A wrong password never matches the cached right one, and costs a token.
    assert web.check_auth("alice", "s3cretX", "10.0.0.1") is False
    assert web.check_auth("alice", "wrong", "10.0.0.1") is False
    assert web.check_auth("nobody", "s3cret", "10.0.0.1") is False
    # Over budget: refused before bcrypt, for this client only; the cached one still works.
    assert web.precheck("alice", "other", "10.0.0.1") is False
    assert web.check_auth("alice", "s3cret", "10.0.0.1") is True
    assert web.check_auth("alice", "wrong", "10.0.0.2") is False
    # A new hash for the user invalidates the cached entry.
    web.users["alice"] = bcrypt.hashpw(b"n3w", bcrypt.gensalt(rounds=4))
    assert web.check_auth("alice", "s3cret", "10.0.0.3") is False
    assert web.check_auth("alice", "n3w", "10.0.0.3") is True


# ---------------------------------------------------------------- connection limits


def _conn_closed(sock: socket.socket, wait: float = 0.5) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_cap_sheds_the_oldest_idle_connection_never_a_busy_one() -> None:
    state = State()
    release = threading.Event()

    def slow_reload() -> ReloadOutcome:
        release.wait(10)
        return ReloadOutcome(True, "reloaded")

    registry = CollectorRegistry()
    build_metrics(registry)
    ep = Endpoints(registry, lambda: state.health, lambda: True, slow_reload)
    server = HttpServer("127.0.0.1:0", ep, WebConfig(), HttpLimits(max_connections=8))
    server.start()
    host, port = server.address.rsplit(":", 1)
    busy = http.client.HTTPConnection(host, int(port), timeout=10)
    idle: list[socket.socket] = []
    try:
        busy.request("POST", "/-/reload")  # waits in slow_reload: a busy connection
        time.sleep(0.2)
        for _ in range(20):
            idle.append(socket.create_connection((host, int(port)), timeout=5))
            time.sleep(0.01)
        time.sleep(0.3)
        assert server.open_connections <= 8
        assert fetch(f"http://{server.address}/-/healthy")[0] == 200
        assert _conn_closed(idle[0]) and not _conn_closed(idle[-1])
        release.set()
        resp = busy.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "success"
    finally:
        release.set()
        busy.close()
        for s in idle:
            s.close()
        server.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_tls_clients_that_never_handshake_do_not_block_others(tls_files: Path) -> None:
    web = load_web_config(str(tls_files / "web.yml"))
    registry = CollectorRegistry()
    build_metrics(registry)
    state = State()
    ep = Endpoints(registry, lambda: state.health, lambda: True, state.reload)
    server = HttpServer("127.0.0.1:0", ep, web, HttpLimits(header_timeout=1.5))
    server.start()
    host, port = server.address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(tls_files / "server.crt"))
    good = {"Authorization": "Basic " + base64.b64encode(b"alice:s3cret").decode()}
    silent = [socket.create_connection((host, int(port)), timeout=5) for _ in range(50)]
    try:
        t0 = time.monotonic()
        code, body, _ = fetch(f"https://{server.address}/metrics", headers=good, context=ctx)
        assert code == 200 and "netmon_up" in body
        assert time.monotonic() - t0 < 1.0
        time.sleep(2.5)  # past the deadline for the TLS handshake and request head
        assert all(_conn_closed(s, 0.1) for s in silent)
        assert server.open_connections == 0
    finally:
        for s in silent:
            s.close()
        server.stop()


def test_web_config_is_read_within_the_config_bounds(tmp_path: Path) -> None:
    """Issue 9: the web config was read with an unbounded safe_load (alias bomb, /dev/zero)."""
    import time

    from netmon_exporter.web_config import WebConfigError, load_web_config

    bomb = tmp_path / "bomb.yml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    lines.append("http_server_config: {headers: {X: *i}}")
    bomb.write_text("\n".join(lines) + "\n")
    zero = tmp_path / "zero.yml"
    zero.symlink_to("/dev/zero")
    dup = tmp_path / "dup.yml"
    dup.write_text("basic_auth_users: {}\nbasic_auth_users: {}\n")
    for path, says in ((bomb, "aliases"), (zero, "not a regular file"), (dup, "duplicate key")):
        t0 = time.monotonic()
        with pytest.raises(WebConfigError, match=says):
            load_web_config(str(path))
        assert time.monotonic() - t0 < 5


def test_route_prefix_serves_every_endpoint_under_it() -> None:
    """--web.route-prefix: as Prometheus, endpoints move under it and / redirects there."""
    server, base = serve(State(), route_prefix="/netmon/")
    try:
        for path in ("/metrics", "/health", "/-/healthy", "/-/ready", "/", ""):
            assert fetch(base + "/netmon" + path)[0] == 200, path
        assert fetch(base + "/netmon/-/reload", method="POST")[0] == 200
        for path in ("/metrics", "/health", "/-/healthy", "/netmon/netmon/metrics"):
            assert fetch(base + path)[0] == 404, path
        conn = http.client.HTTPConnection(*server.address.rsplit(":", 1), timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 302 and resp.getheader("Location") == "/netmon/"
        conn.close()
        _, body, _ = fetch(base + "/netmon/")
        assert 'href="/netmon/metrics"' in body and 'href="/netmon/health"' in body
    finally:
        server.stop()


# ---------------------------------------------------------------- the /metrics render cache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_render_cache_serves_a_render_for_max_age_then_renders_anew() -> None:
    clock, values = Clock(), iter(range(100))
    cache: RenderCache[str] = RenderCache(
        lambda key: f"{key} {next(values)}".encode(), max_age=1.0, clock=clock
    )
    assert cache.peek("a") == (None, False)  # nothing yet, and peek never renders
    assert cache.get("a").body == b"a 0"
    clock.now += 1.0  # exactly max_age: still served
    assert cache.get("a").body == b"a 0"
    assert cache.get("b").body == b"b 1"  # each variant its own render
    clock.now += 0.001  # older than max_age: never served again
    assert cache.peek("a") == (None, False)
    assert cache.get("a").body == b"a 2"
    assert cache.renders == 3


def test_render_cache_invalidated_serves_no_older_render() -> None:
    """After a reload or a health change the daemon invalidates: the next scrape renders."""
    clock, values = Clock(), iter(range(100))
    cache: RenderCache[str] = RenderCache(
        lambda key: f"{key} {next(values)}".encode(), max_age=1.0, clock=clock
    )
    assert cache.get("a").body == b"a 0"
    clock.now += 0.1
    cache.invalidate()
    assert cache.peek("a") == (None, False)
    assert cache.get("a").body == b"a 1"  # rendered after the change
    assert cache.get("a").body == b"a 1"  # and shared again until the next one


def test_a_reload_is_seen_by_the_next_scrape() -> None:
    """POST /-/reload answers after the daemon told the server: no 1-s-old render after it."""
    from prometheus_client import Gauge

    registry = CollectorRegistry()
    gauge = Gauge("netmon_config_workers", "workers", registry=registry)
    gauge.set(1)
    server: HttpServer | None = None

    def reload() -> ReloadOutcome:
        gauge.set(2)
        assert server is not None
        server.metrics_changed()  # what the daemon's Reloader.after_reload does
        return ReloadOutcome(True, "")

    endpoints = Endpoints(
        registry=registry,
        health=lambda: HealthReport("healthy", ()),
        ready=lambda: True,
        reload=reload,
        metrics_max_age=60.0,  # without the invalidation a scrape would see the old value
    )
    server = HttpServer("127.0.0.1:0", endpoints, WebConfig())
    server.start()
    try:
        base = f"http://{server.address}"
        assert (
            "netmon_config_workers 1.0" in urllib.request.urlopen(base + "/metrics").read().decode()
        )
        req = urllib.request.Request(base + "/-/reload", method="POST")
        assert urllib.request.urlopen(req).status == 200
        assert (
            "netmon_config_workers 2.0" in urllib.request.urlopen(base + "/metrics").read().decode()
        )
    finally:
        server.stop()


def test_render_cache_asks_once_for_a_refresh_ahead_and_refresh_renders_anew() -> None:
    clock, values = Clock(), iter(range(100))
    cache: RenderCache[str] = RenderCache(
        lambda key: str(next(values)).encode(), max_age=1.0, refresh_after=0.5, clock=clock
    )
    cache.get("a")
    clock.now += 0.4
    entry, due = cache.peek("a")
    assert entry is not None and entry.body == b"0" and not due
    clock.now += 0.2
    assert cache.peek("a")[1] is True
    assert cache.peek("a")[1] is False  # asked once per render
    cache.refresh("a", with_gzip=True)
    entry, due = cache.peek("a")
    assert entry is not None and entry.body == b"1" and entry.gzip_ready and not due
    assert gzip.decompress(entry.gzipped()) == b"1"


def test_render_cache_errors_reach_every_waiter_and_are_not_cached() -> None:
    calls = []

    def render(key: str) -> bytes:
        calls.append(key)
        if len(calls) == 1:
            raise OSError("proc went away")
        return b"ok"

    cache: RenderCache[str] = RenderCache(render)
    with pytest.raises(OSError, match="proc went away"):
        cache.get("a")
    assert cache.get("a").body == b"ok"


def test_render_cache_keeps_at_most_max_entries() -> None:
    cache: RenderCache[int] = RenderCache(lambda key: b"x" * key, max_entries=3)
    for key in range(10):
        cache.get(key)
    assert [key for key in range(10) if cache.peek(key)[0] is not None] == [7, 8, 9]


def test_concurrent_callers_share_one_render_unless_it_started_too_long_ago() -> None:
    clock = Clock()
    started, release = threading.Event(), threading.Event()
    count = iter(range(100))

    def render(_: str) -> bytes:
        started.set()
        release.wait(10)
        return str(next(count)).encode()

    cache: RenderCache[str] = RenderCache(render, max_age=1.0, clock=clock)
    got: list[bytes] = []

    def get() -> None:
        got.append(cache.get("a").body)

    first = threading.Thread(target=get)
    first.start()
    assert started.wait(10)
    joiners = [threading.Thread(target=get) for _ in range(8)]
    for t in joiners:
        t.start()
    time.sleep(0.2)  # they are waiting for the render under way
    clock.now += 1.5  # a render that started 1.5 s ago is too old to join: a new one
    late = threading.Thread(target=get)
    late.start()
    time.sleep(0.2)
    release.set()
    for t in (first, *joiners, late):
        t.join(10)
    assert sorted(got) == [b"0"] * 9 + [b"1"]
    assert cache.renders == 2


class SlowCollector:
    """A collector whose value can be changed and whose collect can be made slow."""

    def __init__(self) -> None:
        self.value = 1.0
        self.delay = 0.0
        self.collects = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.collects += 1
        time.sleep(self.delay)
        yield GaugeMetricFamily("test_value", "A value the test sets.", value=self.value)


def serve_registry(registry: CollectorRegistry, max_age: float) -> tuple[HttpServer, str]:
    state = State()
    ep = Endpoints(
        registry=registry,
        health=lambda: state.health,
        ready=lambda: state.ready,
        reload=state.reload,
        metrics_max_age=max_age,
    )
    server = HttpServer("127.0.0.1:0", ep, WebConfig())
    server.start()
    return server, f"http://{server.address}"


def test_scrapes_see_new_values_once_the_render_is_older_than_max_age() -> None:
    registry = CollectorRegistry()
    value = SlowCollector()
    registry.register(value)
    server, base = serve_registry(registry, max_age=0.3)
    try:
        assert "test_value 1.0" in fetch(base + "/metrics")[1]
        value.value = 2.0
        t0 = time.monotonic()
        seen = fetch(base + "/metrics")[1]
        if time.monotonic() - t0 < 0.3:
            assert "test_value 1.0" in seen  # within the bound: the shared render
        time.sleep(0.31)
        assert "test_value 2.0" in fetch(base + "/metrics")[1]  # past it: never stale
    finally:
        server.stop()
    # max_age 0: every scrape renders.
    server, base = serve_registry(registry, max_age=0.0)
    try:
        for v in (3.0, 4.0, 5.0):
            value.value = v
            assert f"test_value {v}" in fetch(base + "/metrics")[1]
    finally:
        server.stop()


def test_cached_scrapes_keep_filters_formats_gzip_and_head_exact(
    plain: tuple[State, str],
) -> None:
    _, base = plain
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def get(path: str, method: str = "GET", **headers: str) -> tuple[bytes, dict[str, str]]:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read(), dict(resp.getheaders())

    try:
        for _ in range(2):  # the second round is served from the renders of the first
            plain_body, h = get("/metrics")
            assert "Content-Encoding" not in h
            assert h["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            zipped, hz = get("/metrics", **{"Accept-Encoding": "gzip"})
            assert hz["Content-Encoding"] == "gzip"
            assert gzip.decompress(zipped) == plain_body
            head, hh = get("/metrics", "HEAD", **{"Accept-Encoding": "gzip"})
            assert head == b"" and int(hh["Content-Length"]) == len(zipped)
            head, hh = get("/metrics", "HEAD")
            assert head == b"" and int(hh["Content-Length"]) == len(plain_body)
            om, ho = get("/metrics", Accept="application/openmetrics-text")
            assert ho["Content-Type"].startswith("application/openmetrics-text")
            assert om.endswith(b"# EOF\n") and not plain_body.endswith(b"# EOF\n")
            one, _ = get("/metrics?name[]=netmon_up")
            assert b"netmon_up" in one and b"netmon_files_processed_total" not in one
            two, _ = get("/metrics?name[]=netmon_up&name[]=netmon_files_processed_total")
            assert b"netmon_up" in two and b"netmon_files_processed_total" in two
            # The filter's order does not matter.
            two_b, _ = get("/metrics?name[]=netmon_files_processed_total&name[]=netmon_up")
            assert two_b == two
    finally:
        conn.close()


def test_concurrent_scrapes_share_one_render() -> None:
    registry = CollectorRegistry()
    build_metrics(registry)
    slow = SlowCollector()
    slow.delay = 0.3  # every scrape below arrives while the first render runs
    registry.register(slow)
    server, base = serve_registry(registry, max_age=5.0)
    try:
        bodies: list[str] = []

        def scrape() -> None:
            bodies.append(fetch(base + "/metrics")[1])

        threads = [threading.Thread(target=scrape) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(bodies) == 8 and len(set(bodies)) == 1
        assert server.metrics_renders == 1 and slow.collects == 1
    finally:
        server.stop()


def test_a_slow_refresh_never_holds_up_scrapes() -> None:
    """Past refresh_after, scrapes get the render they have while a new one is made."""
    registry = CollectorRegistry()
    slow = SlowCollector()
    registry.register(slow)
    server, base = serve_registry(registry, max_age=1.0)  # refreshed after 0.5 s
    try:
        fetch(base + "/metrics")
        slow.delay, slow.value = 0.8, 2.0
        time.sleep(0.6)
        for _ in range(3):  # the first starts the refresh; none waits for it
            t0 = time.monotonic()
            assert "test_value 1.0" in fetch(base + "/metrics")[1]
            assert time.monotonic() - t0 < 0.25
        deadline = time.monotonic() + 5
        while "test_value 2.0" not in fetch(base + "/metrics")[1]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert server.metrics_renders == 2
    finally:
        server.stop()


def test_visits_on_a_schedule_get_a_render_planned_ahead() -> None:
    """Guards docs/architecture.md: "a render ahead of the next visit"."""
    clock = Clock()
    cache: RenderCache[str] = RenderCache(lambda key: b"x", max_age=1.0, clock=clock)

    def visits(key: str, gaps: list[float]) -> list[float | None]:
        out = []
        for gap in gaps:
            clock.now += gap
            out.append(cache.visited(key))
        return out

    # Prometheus every 15 s: from the third visit, a render 50 ms before the next one
    assert visits("p", [0, 15, 15]) == [None, None, pytest.approx(14.95)]
    assert visits("p", [15.2]) == [pytest.approx(15.15)]  # 15.2 vs 15: within 2 % + 20 ms
    assert visits("p", [17]) == [None]  # off schedule: nothing planned
    # an HA pair, 4 s apart, both every 15 s: the next visit is the other's, 4 s on
    assert visits("ha", [0, 4, 11, 4, 11]) == [None, None, None, None, pytest.approx(3.95)]
    # visits closer than AHEAD_MIN_INTERVAL find a fresh render through refresh_after
    assert visits("fast", [0, 1, 1, 1]) == [None, None, None, None]
    # the lead grows with the last render's time (twice it, plus 30 ms)
    slow: RenderCache[str] = RenderCache(
        lambda key: (setattr(clock, "now", clock.now + 0.2), b"y")[1], max_age=1.0, clock=clock
    )
    slow.get("k")
    for _ in range(2):
        slow.visited("k")
        clock.now += 10
    assert slow.visited("k") == pytest.approx(10 - 0.43)
    # what a client can choose (name[] filters) is bounded: max_entries keys remembered
    for k in range(100):
        cache.visited(f"v{k}")
    assert len(cache._visits) <= cache.max_entries


def test_a_scraper_on_a_schedule_is_served_a_render_made_ahead() -> None:
    """Scrapes every 2 s (longer than max_age, so each found its render expired and
    waited for a new one): from the fourth, the render is made before the scrape comes."""
    registry = CollectorRegistry()
    slow = SlowCollector()
    registry.register(slow)
    slow.delay = 0.3
    server, base = serve_registry(registry, max_age=1.0)
    try:
        t0, took = time.monotonic(), []
        for k in range(6):
            time.sleep(max(0.0, t0 + 2.0 * k - time.monotonic()))
            t = time.monotonic()
            assert fetch(base + "/metrics")[0] == 200
            took.append(time.monotonic() - t)
        assert min(took[:3]) >= 0.3  # each waited for its render
        assert max(took[3:]) < 0.25, took  # made ahead, served at once
        assert server.metrics_renders == 6  # one render a scrape, as before: none wasted
    finally:
        server.stop()
