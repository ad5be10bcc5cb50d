"""The HTTP endpoints: /metrics, /health, /-/healthy, /-/ready, POST /-/reload, landing page.

Nothing else: no admin UI. TLS and basic auth come from the web config file.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from . import __version__
from .health import UNHEALTHY, HealthReport
from .web_config import WebConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadOutcome:
    ok: bool
    message: str
    restart_required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoints:
    """What the server needs from the daemon (callables, so the server stays dumb)."""

    registry: CollectorRegistry
    health: Callable[[], HealthReport]
    ready: Callable[[], bool]
    reload: Callable[[], ReloadOutcome]
    telemetry_path: str = "/metrics"


def _landing(telemetry_path: str) -> bytes:
    p = html.escape(telemetry_path)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>netmon-exporter</title></head>
<body><h1>netmon-exporter</h1><p>Version {__version__}</p>
<ul>
<li><a href="{p}">{p}</a>: Prometheus metrics</li>
<li><a href="/health">/health</a>: health state and checks (JSON)</li>
<li><a href="/-/healthy">/-/healthy</a>: liveness</li>
<li><a href="/-/ready">/-/ready</a>: readiness</li>
<li>POST /-/reload: reload the configuration</li>
</ul></body></html>
""".encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = f"netmon-exporter/{__version__}"
    endpoints: Endpoints
    web: WebConfig

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug(
            "http request", extra={"client": self.client_address[0], "request": format % args}
        )

    # -- helpers
    def _send(
        self,
        code: int,
        body: bytes,
        ctype: str = "text/plain; charset=utf-8",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**self.web.headers, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorised(self) -> bool:
        if not self.web.users:
            return True
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, pw = "", ""
            if user and self.web.check_auth(user, pw):
                return True
        self._send(
            401, b"Unauthorized\n", extra={"WWW-Authenticate": 'Basic realm="netmon-exporter"'}
        )
        return False

    def _route(self, method: str) -> None:
        if not self._authorised():
            return
        path = urlsplit(self.path).path
        ep = self.endpoints
        routes: dict[str, tuple[tuple[str, ...], Callable[[], None]]] = {
            ep.telemetry_path: (("GET", "HEAD"), self._metrics),
            "/health": (("GET", "HEAD"), self._health),
            "/-/healthy": (("GET", "HEAD"), lambda: self._send(200, b"Healthy\n")),
            "/-/ready": (("GET", "HEAD"), self._ready),
            "/-/reload": (("POST", "PUT"), self._reload),
            "/": (
                ("GET", "HEAD"),
                lambda: self._send(200, _landing(ep.telemetry_path), "text/html; charset=utf-8"),
            ),
        }
        if path not in routes:
            self._send(404, b"Not Found\n")
            return
        methods, fn = routes[path]
        if method not in methods:
            self._send(
                405,
                f"Method Not Allowed; use {' or '.join(methods)}\n".encode(),
                extra={"Allow": ", ".join(methods)},
            )
            return
        fn()

    def _metrics(self) -> None:
        encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
        self._send(200, encoder(self.endpoints.registry), ctype)

    def _health(self) -> None:
        report = self.endpoints.health()
        code = 503 if report.state == UNHEALTHY else 200
        self._send(
            code, json.dumps(report.to_dict(), indent=2).encode() + b"\n", "application/json"
        )

    def _ready(self) -> None:
        if self.endpoints.ready():
            self._send(200, b"Ready\n")
        else:
            self._send(503, b"Not ready\n")

    def _reload(self) -> None:
        outcome = self.endpoints.reload()
        body: dict[str, Any] = {
            "status": "success" if outcome.ok else "error",
            "message": outcome.message,
        }
        if outcome.restart_required:
            body["restart_required"] = list(outcome.restart_required)
        self._send(
            200 if outcome.ok else 500, json.dumps(body).encode() + b"\n", "application/json"
        )

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._route("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._route("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Broken clients (plain HTTP on a TLS port, resets) are not our errors.
        log.debug("http connection error", exc_info=True, extra={"client": str(client_address[0])})


def parse_listen_address(addr: str) -> tuple[str, int]:
    """Split ``host:port`` / ``:port`` / ``[::1]:port``; raise ValueError with a clear reason."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--web.listen-address: {addr!r} is not host:port")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


class HttpServer:
    """A threaded HTTP(S) server bound at construction (so port 0 is resolved at once)."""

    def __init__(self, address: str, endpoints: Endpoints, web: WebConfig) -> None:
        host, port = parse_listen_address(address)
        handler = type("Handler", (_Handler,), {"endpoints": endpoints, "web": web})
        server_cls: type[_Server] = _Server
        if ":" in host:
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self._server = server_cls((host, port), handler)
        if web.ssl_context is not None:
            # Handshake lazily in the handler thread so a slow client cannot block accept().
            self._server.socket = web.ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "https" if web.ssl_context else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
