"""The web config file means what it means to exporter-toolkit (issue 14).

``tests/data/web-configs/`` is a corpus of web config files, valid and invalid, that
covers every key and every enumeration value. Each one goes through ``promtool check
web-config`` (exporter-toolkit's own ``Validate``) and through the daemon's loader, and
the verdicts must agree. Each file says in its first lines:

- ``# expect: ok`` or ``# expect: error: <text in the daemon's message>``;
- ``# promtool: predates <key>``: the key is newer than the installed promtool's
  exporter-toolkit (0.8); that promtool refuses it as an unknown field, current ones
  accept it. The test checks that this is the only reason they differ;
- ``# promtool: accepts ...``: a deliberate difference, said why;
- ``# serves: no``: valid, but no ordinary client can connect (as with exporter-toolkit).

Paths in the files are relative to the corpus folder; ``certs/`` is made by the
``pki`` fixture with openssl. ``@SERVER_CRT@``, ``@SERVER_KEY@`` and ``@CA_CRT@`` are
replaced by those PEM files (for the inline ``cert``, ``key`` and ``client_ca`` keys),
``@DIR@`` by the folder.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import random
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from netmon_exporter.health import CheckResult, HealthReport
from netmon_exporter.http_server import Endpoints, HttpServer, ReloadOutcome
from netmon_exporter.metrics import build_metrics
from netmon_exporter.web_config import (
    _HTTP_KEYS,
    _TLS_KEYS,
    _TOP_KEYS,
    CIPHER_SUITES,
    CLIENT_AUTH_TYPES,
    CURVES,
    EXTRA_HTTP_HEADERS,
    TLS_VERSIONS,
    LiveWebConfig,
    WebConfigError,
    bcrypt_cost_error,
    load_web_config,
    subject_alt_names,
)

CORPUS = Path(__file__).parent / "data" / "web-configs"
FILES = sorted(p.name for p in CORPUS.glob("*.yml"))
HAVE_OPENSSL = shutil.which("openssl") is not None
HAVE_PROMTOOL = shutil.which("promtool") is not None
needs_openssl = pytest.mark.skipif(not HAVE_OPENSSL, reason="openssl CLI not installed")


# ---------------------------------------------------------------- test PKI


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_cert(
    d: Path,
    name: str,
    cn: str,
    san: str | None = None,
    *,
    ca: str | None = None,
    rsa: bool = False,
    days: int = 2,
) -> None:
    """Write ``name.crt`` and ``name.key`` in ``d``, signed by ``ca`` (or self-signed)."""
    key = (
        ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    )
    args = ["req", "-x509", *key, "-nodes", "-days", str(days), "-subj", f"/CN={cn}"]
    args += ["-keyout", f"{name}.key", "-out", f"{name}.crt"]
    if ca:
        args += ["-CA", f"{ca}.crt", "-CAkey", f"{ca}.key"]
        args += ["-addext", "basicConstraints=critical,CA:FALSE"]
    if san:
        args += ["-addext", f"subjectAltName={san}"]
    _openssl(*args, cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAVE_OPENSSL:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("pki")
    make_cert(d, "ca", "netmon-test-ca")
    make_cert(d, "server", "localhost", "DNS:localhost,IP:127.0.0.1", ca="ca", rsa=True)
    make_cert(d, "server-ec", "localhost", "DNS:localhost,IP:127.0.0.1", ca="ca")
    make_cert(
        d,
        "client",
        "scraper",
        "DNS:scraper.example.com,email:scraper@example.com,"
        "URI:spiffe://example.org/scraper,IP:10.0.0.1",
        ca="ca",
    )
    make_cert(d, "intruder", "intruder", "DNS:intruder.example.com", ca="ca")
    make_cert(d, "self-signed-client", "self", "URI:spiffe://example.org/scraper")
    (d / "not-pem.txt").write_text("this is not a certificate\n")
    return d


@pytest.fixture(scope="module")
def corpus(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus, copied next to the certificates, placeholders filled in."""
    d = tmp_path_factory.mktemp("web-configs")
    shutil.copytree(pki, d / "certs")

    def pem(name: str) -> str:
        return (pki / name).read_text().strip().replace("\n", "\n    ")

    fills = {
        "@SERVER_CRT@": pem("server.crt"),
        "@SERVER_KEY@": pem("server.key"),
        "@CA_CRT@": pem("ca.crt"),
        "@DIR@": str(d),
    }
    for name in FILES:
        text = (CORPUS / name).read_text()
        for mark, value in fills.items():
            text = text.replace(mark, value)
        (d / name).write_text(text)
    return d


def header(name: str, field: str) -> str | None:
    for line in (CORPUS / name).read_text().splitlines():
        m = re.match(rf"# {field}: (.*)", line)
        if m:
            return m.group(1)
    return None


def expectation(name: str) -> str | None:
    """None for a valid file, else the text the daemon's message must contain."""
    expect = header(name, "expect")
    if name == "valid-empty-file.yml":
        return None
    assert expect is not None, f"{name} has no '# expect:' line"
    if expect == "ok":
        return None
    assert expect.startswith("error: "), name
    return expect.removeprefix("error: ")


def daemon_verdict(path: Path) -> tuple[bool, str]:
    try:
        load_web_config(str(path))
    except WebConfigError as exc:
        return False, str(exc)
    return True, ""


def promtool_verdict(path: Path) -> tuple[bool, str]:
    proc = subprocess.run(
        ["promtool", "check", "web-config", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


# ---------------------------------------------------------------- the corpus


def test_corpus_names_say_the_verdict() -> None:
    assert len(FILES) >= 100
    for name in FILES:
        want = expectation(name)
        assert name.startswith(("valid-", "invalid-", "divergent-")), name
        assert (want is None) == name.startswith("valid-"), name


@pytest.mark.parametrize("name", FILES)
def test_the_daemon_gives_the_expected_verdict_and_message(name: str, corpus: Path) -> None:
    ok, message = daemon_verdict(corpus / name)
    want = expectation(name)
    if want is None:
        assert ok, message
    else:
        assert not ok, f"{name} was accepted"
        for part in want.replace("@DIR@", str(corpus)).split(" && "):
            assert part in message, message
        assert message.startswith(f"--web.config.file: {corpus / name}: "), message


@pytest.mark.skipif(not HAVE_PROMTOOL, reason="promtool not installed")
@pytest.mark.parametrize("name", FILES)
def test_promtool_and_the_daemon_agree(name: str, corpus: Path) -> None:
    ours, message = daemon_verdict(corpus / name)
    theirs, output = promtool_verdict(corpus / name)
    note = header(name, "promtool")
    if note is None:
        assert ours == theirs, f"daemon: {ours} {message}\npromtool: {theirs} {output}"
    elif note.startswith("predates "):
        key = note.removeprefix("predates ")
        assert not theirs and f"field {key} not found" in output, output
    else:
        assert note.startswith("accepts") and theirs and not ours, (note, output, message)


def test_corpus_covers_every_key_and_enumeration_value() -> None:
    valid = "\n".join((CORPUS / n).read_text() for n in FILES if n.startswith("valid-"))
    for key in (*_TOP_KEYS, *_TLS_KEYS, *_HTTP_KEYS):
        assert re.search(rf"^\s*{key}:", valid, re.M), f"no valid corpus file sets {key}"
    for names in (TLS_VERSIONS, CIPHER_SUITES, CURVES, EXTRA_HTTP_HEADERS):
        for value in names:
            assert re.search(rf"\b{re.escape(value)}\b", valid), f"{value} is in no valid file"
    for auth in filter(None, CLIENT_AUTH_TYPES):
        assert f"client_auth_type: {auth}\n" in valid, auth


# ---------------------------------------------------------------- what is accepted works


def serve(web: object, path: str = "/metrics") -> HttpServer:
    registry = CollectorRegistry()
    build_metrics(registry)
    report = HealthReport("healthy", (CheckResult("capture_directory", True, True, "ok"),))
    ep = Endpoints(
        registry=registry,
        health=lambda: report,
        ready=lambda: True,
        reload=lambda: ReloadOutcome(True, "reloaded"),
        telemetry_path=path,
    )
    server = HttpServer("127.0.0.1:0", ep, web)  # type: ignore[arg-type]
    server.start()
    return server


@contextlib.contextmanager
def served(path: Path) -> Iterator[HttpServer]:
    """The server on the web config file at `path`, stopped on leaving."""
    server = serve(load_web_config(str(path)))
    try:
        yield server
    finally:
        server.stop()


def client_context(pki: Path, cert: str | None = "client") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return ctx


def get(
    server: HttpServer,
    ctx: ssl.SSLContext | None,
    path: str = "/-/healthy",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.address.rsplit(":", 1)
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
    else:
        conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=ctx)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def peer_certificate(server: HttpServer, ctx: ssl.SSLContext) -> bytes:
    host, port = server.address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


VALID = [n for n in FILES if n.startswith("valid-")]


@needs_openssl
@pytest.mark.parametrize("name", VALID)
def test_every_valid_file_serves(name: str, corpus: Path, pki: Path) -> None:
    """What the loader accepts works: the server starts and a suitable client gets in."""
    web = load_web_config(str(corpus / name))
    server = serve(web)
    try:
        ctx = client_context(pki, "self-signed-client" if "any-cert" in name else "client")
        if header(name, "serves") is not None:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                get(server, ctx)
            return
        code, headers, _ = get(server, ctx if web.ssl_context else None)
        assert code == (401 if web.users else 200)
        for k, v in web.headers.items():
            assert headers[k] == v
    finally:
        server.stop()


def web_file(d: Path, pki: Path, body: str) -> Path:
    shutil.copytree(pki, d / "certs", dirs_exist_ok=True)
    path = d / "web.yml"
    path.write_text(body)
    return path


TLS = "tls_server_config:\n  cert_file: certs/server.crt\n  key_file: certs/server.key\n"


@needs_openssl
def test_client_allowed_sans_are_checked_in_the_handshake(tmp_path: Path, pki: Path) -> None:
    path = web_file(
        tmp_path,
        pki,
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: certs/ca.crt\n"
        "  client_allowed_sans: [scraper.example.com]\n",
    )
    with served(path) as server:
        assert get(server, client_context(pki, "client"))[0] == 200
        for refused in ("intruder", None):  # a SAN not allowed; no certificate
            with pytest.raises((ssl.SSLError, ConnectionError)):
                get(server, client_context(pki, refused))


@needs_openssl
def test_client_certificates_taken_without_verification(tmp_path: Path, pki: Path) -> None:
    """RequireAnyClientCert wants a certificate, any; RequestClientCert takes none too."""
    path = web_file(tmp_path, pki, TLS + "  client_auth_type: RequireAnyClientCert\n")
    with served(path) as server:
        assert get(server, client_context(pki, "self-signed-client"))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(server, client_context(pki, None))
    path.write_text(TLS + "  client_auth_type: RequestClientCert\n")
    with served(path) as server:
        assert get(server, client_context(pki, None))[0] == 200
        assert get(server, client_context(pki, "self-signed-client"))[0] == 200


@needs_openssl
def test_versions_and_curves_are_applied(tmp_path: Path, pki: Path) -> None:
    path = web_file(tmp_path, pki, TLS + "  min_version: TLS13\n  curve_preferences: [CurveP384]\n")
    with served(path) as server:
        old = client_context(pki)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(server, old)
        assert get(server, client_context(pki))[0] == 200
    path.write_text(
        TLS + "  max_version: TLS12\n  cipher_suites: [TLS_RSA_WITH_AES_256_GCM_SHA384]\n"
    )
    with served(path) as server:
        host, port = server.address.rsplit(":", 1)
        ctx = client_context(pki)
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:AES256-GCM-SHA384")  # the server picks
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() == "TLSv1.2"
            assert tls.cipher()[0] == "AES256-GCM-SHA384"  # type: ignore[index]


def test_subject_alt_names_are_read_as_go_prints_them(pki: Path) -> None:
    der = ssl.PEM_cert_to_DER_cert((pki / "client.crt").read_text())
    assert subject_alt_names(der) == [
        "scraper.example.com",
        "scraper@example.com",
        "10.0.0.1",
        "spiffe://example.org/scraper",
    ]


def test_bcrypt_cost_is_checked_as_go_does() -> None:
    good = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4)).decode()
    assert bcrypt_cost_error(good) is None
    assert bcrypt_cost_error(good.replace("$2b$", "$2y$")) is None
    assert bcrypt_cost_error("$2y$10$" + "." * 51) == "is too short to be a bcrypt hash"


# ---------------------------------------------------------------- re-read on change


@needs_openssl
def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path, pki: Path) -> None:
    path = web_file(tmp_path, pki, TLS)
    live = LiveWebConfig(str(path), interval=0.1)
    server = serve(live)
    ctx = client_context(pki, None)
    try:
        first = peer_certificate(server, ctx)
        assert first == ssl.PEM_cert_to_DER_cert((pki / "server.crt").read_text())
        # Rotate as cert-manager or certbot do: new files moved into place.
        make_cert(tmp_path, "next", "localhost", "DNS:localhost,IP:127.0.0.1", ca="certs/ca")
        (tmp_path / "next.key").replace(tmp_path / "certs" / "server.key.new")
        (tmp_path / "next.crt").replace(tmp_path / "certs" / "server.crt.new")
        (tmp_path / "certs" / "server.crt.new").replace(tmp_path / "certs" / "server.crt")
        (tmp_path / "certs" / "server.key.new").replace(tmp_path / "certs" / "server.key")
        deadline = time.monotonic() + 5
        while peer_certificate(server, ctx) == first:
            assert time.monotonic() < deadline, "the old certificate is still served"
            time.sleep(0.05)
        assert get(server, ctx)[0] == 200
        assert live.reloads == 1 and live.error is None
    finally:
        server.stop()


@needs_openssl
def test_users_headers_and_errors_follow_the_file(tmp_path: Path, pki: Path) -> None:
    path = web_file(tmp_path, pki, "")
    live = LiveWebConfig(str(path), interval=0.0)
    server = serve(live)
    try:
        assert get(server, None)[0] == 200
        hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
        path.write_text(
            f"basic_auth_users:\n  alice: '{hashed}'\n"
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        )
        code, headers, _ = get(server, None)
        assert code == 401 and headers["X-Frame-Options"] == "deny"  # on 401 too
        auth = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
        assert get(server, None, headers=auth)[0] == 200
        path.write_text("http_server_config:\n  headers:\n    Authorization: x\n")
        assert get(server, None, headers=auth)[0] == 500  # as exporter-toolkit
        assert live.error is not None and "Authorization" in live.error
        path.write_text("")
        assert get(server, None)[0] == 200 and live.error is None
    finally:
        server.stop()


@needs_openssl
def test_an_invalid_file_keeps_the_last_good_certificate_for_handshakes(
    tmp_path: Path, pki: Path
) -> None:
    path = web_file(tmp_path, pki, TLS)
    live = LiveWebConfig(str(path), interval=0.0)
    server = serve(live)
    ctx = client_context(pki, None)
    try:
        (tmp_path / "certs" / "server.key").write_text("garbage\n")
        assert get(server, ctx)[0] == 500
        assert live.error is not None and "key_file" in live.error
    finally:
        server.stop()


def test_changes_are_looked_for_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("")
    now = [0.0]
    live = LiveWebConfig(str(path), interval=1.0, clock=lambda: now[0])
    path.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    assert live.current().headers == {}
    now[0] = 1.0
    assert live.current().headers == {"X-Frame-Options": "deny"}


def test_a_file_unchanged_is_not_read_again(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("")
    live = LiveWebConfig(str(path), interval=0.0)
    first = live.current()
    for _ in range(5):
        assert live.current() is first
    assert live.reloads == 0


def test_live_config_refuses_a_bad_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  clent_auth_type: x\n")
    with pytest.raises(WebConfigError, match="did you mean client_auth_type"):
        LiveWebConfig(str(path))


# ---------------------------------------------------------------- random files, same verdicts

_HASH = "'$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi'"
_TLS_VALUES = {
    "cert_file": ["certs/server.crt", "certs/client.crt", "nope", "''", "~", "certs/ca.key"],
    "key_file": ["certs/server.key", "certs/client.key", "nope", "''", "~", "certs/server.crt"],
    "client_auth_type": [
        *filter(None, CLIENT_AUTH_TYPES),
        "''",
        "~",
        "bogus",
        "requireanyclientcert",
    ],
    "client_ca_file": ["certs/ca.crt", "nope", "''", "~", "certs/server.key"],
    "cipher_suites": [
        "[TLS_AES_128_GCM_SHA256]",
        "[TLS_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]",
        "[]",
        "~",
        "[bogus]",
        "x",
        "[~]",
    ],
    "curve_preferences": ["[X25519]", "[CurveP256, CurveP384]", "[]", "~", "[P-256]", "X25519"],
    "min_version": [*TLS_VERSIONS, "~", "''", "TLS1.2", "12", "[TLS12]"],
    "max_version": ["TLS10", "TLS12", "TLS13", "~", "TLS14", "true"],
    "prefer_server_cipher_suites": ["true", "false", "yes", "No", "~", "1", "'true'", "Y"],
    "clent_auth_type": ["RequireAndVerifyClientCert"],
}
_HTTP_VALUES = {
    "http2": ["true", "false", "off", "~", "'no'", "0"],
    "headers": [
        "{X-Frame-Options: deny}",
        "{X-Frame-Options: SAMEORIGIN}",
        "{Strict-Transport-Security: 1, X-XSS-Protection: ~}",
        "{Server: x}",
        "{}",
        "~",
        "[]",
        "{Content-Security-Policy: [a]}",
    ],
}
_USERS = [_HASH, "x", "~", "'$2y$40$" + "a" * 53 + "'", "[a]", "123"]


def random_web_config(rng: random.Random) -> str:
    """Return a web config made of keys this promtool knows, good and bad values mixed."""
    lines = []
    for section, values, chance in (
        ("tls_server_config", _TLS_VALUES, 0.8),
        ("http_server_config", _HTTP_VALUES, 0.4),
    ):
        if rng.random() < chance:
            body = [f"  {k}: {rng.choice(v)}" for k, v in values.items() if rng.random() < 0.35]
            lines += [f"{section}:", *body] if body else [f"{section}: {{}}"]
    if rng.random() < 0.3:
        users = [f"  u{i}: {rng.choice(_USERS)}" for i in range(rng.randint(0, 2))]
        lines += ["basic_auth_users:", *users] if users else ["basic_auth_users: {}"]
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(not HAVE_PROMTOOL, reason="promtool not installed")
def test_random_web_configs_get_promtools_verdict(corpus: Path) -> None:
    """200 random mixes of good and bad values: the daemon says yes exactly when promtool does."""
    rng = random.Random(14)
    differ = []
    for i in range(200):
        text = random_web_config(rng)
        path = corpus / f"random-{i}.yml"
        path.write_text(text)
        ours, message = daemon_verdict(path)
        theirs, output = promtool_verdict(path)
        if ours != theirs:
            differ.append(f"{text}daemon: {message}\npromtool: {output}")
    assert not differ, "\n\n".join(differ[:5])
