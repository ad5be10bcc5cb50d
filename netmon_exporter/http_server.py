"""The HTTP endpoints: /metrics, /health, /-/healthy, /-/ready, POST /-/reload, landing page.

Nothing else: no admin UI. TLS and basic auth come from the web config file.

Why Tornado's HTTP server and not the standard library's or cheroot: the scrape
endpoint must keep answering while thousands of idle, slow (slowloris) or
wrong-password clients are connected, and each of those must cost as little as an
open socket. The standard library's handler spends a thread per connection and
waits forever for a request line. cheroot (checked at 11.1) hands a new connection
to a worker thread before a byte has arrived, so ten idle sockets hold its ten
workers for the whole socket timeout, and it does the TLS handshake on its accept
thread, where one silent TLS client stops every other connection. waitress buffers
requests well but has no TLS. Tornado (maintained since 2009, the server under
Jupyter) reads every connection on one event loop, so an idle or slow client is a
file descriptor and no thread; ``idle_connection_timeout`` is a deadline for the
*whole* request head (TLS handshake included), not a per-read timeout that a
slowloris can renew byte by byte; it takes an ``ssl.SSLContext`` as is (client
certificates, minimum version); and it caps header and body sizes. On top of it
this module adds what it lacks: a connection cap that closes the longest-idle
connection first (a connection that has sent a complete request is never closed
for a newcomer), a real listen backlog, a write deadline, and a thread pool for
the endpoints, a separate one for reloads and one thread for bcrypt, so neither a
stuck reload nor a wrong-password flood can take the scrape threads.

Every request passes the basic-auth check before anything else (also unknown
methods), and no response names the server or its version.

``/metrics`` serves renders shared by scrapers (``exposition.py``): a scrape gets a render
that started at most ``Endpoints.metrics_max_age`` (1 s) before it arrived, or waits for
one. A fresh render is answered on the event loop in the iteration that read the request
(after the auth check); rendering, gzip and every other endpoint run on the thread pool.

The web config is consulted per request and per connection, as exporter-toolkit does
(its ``ServeHTTP`` re-reads the file, its ``GetConfigForClient`` the certificate): a
:class:`~netmon_exporter.web_config.LiveWebConfig` re-reads it when a file changed, so
users, headers and certificates change without a restart; while the file is invalid,
every request gets 500. Its response headers go on every response, 401 included.

Every endpoint lives under ``--web.route-prefix`` (default ``/``); with another prefix,
``/`` redirects to it, as Prometheus does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import html
import json
import logging
import resource
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from tornado import httputil, iostream
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer as _TornadoServer
from tornado.ioloop import IOLoop

from . import __version__
from .exposition import MAX_AGE, RenderCache, Rendered
from .health import UNHEALTHY, HealthReport
from .web_config import WebConfig, WebConfigError

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
    route_prefix: str = "/"  # every path above is served under it
    # A scrape may be answered from a render made up to this many seconds before it
    # arrived (shared by concurrent scrapers; see exposition.py). 0: a render per scrape
    # (concurrent scrapes still share one).
    metrics_max_age: float = MAX_AGE


class WebConfigSource(Protocol):
    """A :class:`WebConfig` (fixed) or a :class:`~netmon_exporter.web_config.LiveWebConfig`."""

    @property
    def ssl_context(self) -> ssl.SSLContext | None: ...

    def current(self) -> WebConfig: ...


def under_prefix(prefix: str, path: str) -> str:
    """Return ``path`` served under the route ``prefix`` (``/`` means none)."""
    prefix = "/" + prefix.strip("/")
    return path if prefix == "/" else prefix + path


@dataclass(frozen=True)
class HttpLimits:
    """How much an HTTP client may hold; the defaults suit a scrape target."""

    max_connections: int = 512  # also held to half the process's open-file limit
    header_timeout: float = 10.0  # the whole request head (and TLS handshake, keep-alive idle)
    body_timeout: float = 10.0
    write_timeout: float = 30.0  # a client that does not read its response is dropped
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    backlog: int = 1024  # the kernel holds it to net.core.somaxconn
    workers: int = 8  # threads for the endpoints; reloads and bcrypt have their own


def effective_max_connections(limits: HttpLimits) -> int:
    """Return the connection cap, held to half the open-file limit so the daemon keeps fds."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return max(8, min(limits.max_connections, soft // 2))


# ---------------------------------------------------------------- the endpoints (no I/O)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    client: str = ""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _landing(telemetry_path: str, prefix: str) -> bytes:
    def link(path: str) -> str:
        p = html.escape(under_prefix(prefix, path))
        return f'<a href="{p}">{p}</a>'

    reload = html.escape(under_prefix(prefix, _RELOAD_PATH))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>netmon-exporter</title></head>
<body><h1>netmon-exporter</h1><p>Version {__version__}</p>
<ul>
<li>{link(telemetry_path)}: Prometheus metrics</li>
<li>{link("/health")}: health state and checks (JSON)</li>
<li>{link("/-/healthy")}: liveness</li>
<li>{link("/-/ready")}: readiness</li>
<li>POST {reload}: reload the configuration</li>
</ul></body></html>
""".encode()


_TEXT = "text/plain; charset=utf-8"
_RELOAD_PATH = "/-/reload"


def credentials(req: Request) -> tuple[str, str] | None:
    """Return the basic-auth user and password of a request, or None."""
    header = req.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, pw = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, pw) if user else None


@dataclass(frozen=True)
class MetricsVariant:
    """What a /metrics body depends on: its format and its ``name[]`` filter."""

    content_type: str
    names: tuple[str, ...]
    encoder: Callable[[Any], bytes] = field(compare=False, hash=False)  # registry -> body


class Routes:
    """Answer an authorised request: plain code with no sockets or clocks."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.ep = endpoints
        self.renders: RenderCache[MetricsVariant] = RenderCache(
            self._render, max_age=endpoints.metrics_max_age
        )
        ep = endpoints
        prefix = "/" + ep.route_prefix.strip("/")
        landing = _landing(ep.telemetry_path, prefix)
        table: dict[str, tuple[tuple[str, ...], Callable[[Request], Response]]] = {
            ep.telemetry_path: (("GET", "HEAD"), self._metrics),
            "/health": (("GET", "HEAD"), self._health),
            "/-/healthy": (("GET", "HEAD"), lambda _: self.text(200, b"Healthy\n")),
            "/-/ready": (("GET", "HEAD"), self._ready),
            _RELOAD_PATH: (("POST",), self._reload),
            "/": (
                ("GET", "HEAD"),
                lambda _: self.text(200, landing, "text/html; charset=utf-8"),
            ),
        }
        self.routes = {under_prefix(prefix, path): route for path, route in table.items()}
        self._metrics_path = under_prefix(prefix, ep.telemetry_path)
        self._reload_path = under_prefix(prefix, _RELOAD_PATH)
        if prefix != "/":
            home = prefix + "/"
            self.routes[prefix] = table["/"]
            self.routes["/"] = (
                ("GET", "HEAD"),
                lambda _: self.text(302, b"Found\n", extra=(("Location", home),)),
            )

    def text(
        self, status: int, body: bytes, ctype: str = _TEXT, extra: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        return Response(status, body, (("Content-Type", ctype), *extra))

    def unauthorised(self) -> Response:
        return self.text(
            401, b"Unauthorized\n", extra=(("WWW-Authenticate", 'Basic realm="netmon-exporter"'),)
        )

    def is_reload(self, req: Request) -> bool:
        return req.path == self._reload_path and req.method == "POST"

    def respond(self, req: Request) -> Response:
        """Route an authorised request (any method: unknown ones get 405)."""
        if req.path not in self.routes:
            return self.text(404, b"Not Found\n")
        methods, fn = self.routes[req.path]
        if req.method not in methods:
            return self.text(
                405,
                f"Method Not Allowed; use {' or '.join(methods)}\n".encode(),
                extra=(("Allow", ", ".join(methods)),),
            )
        return fn(req)

    def respond_now(self, req: Request) -> tuple[Response | None, Callable[[], None] | None]:
        """Answer a scrape from a fresh render without blocking, if there is one.

        For the event loop: no thread hop, no render, no gzip. Returns None when the
        request needs :meth:`respond` (on a worker thread), and, when the render served
        is getting old, a refresh to run on a worker thread.
        """
        if req.path != self._metrics_path or req.method not in ("GET", "HEAD"):
            return None, None
        variant, want_gzip = self._variant(req)
        entry, refresh_due = self.renders.peek(variant)
        refresh = (lambda: self.renders.refresh(variant, want_gzip)) if refresh_due else None
        if entry is None or (want_gzip and not entry.gzip_ready):
            return None, refresh
        return self._metrics_response(variant, entry, want_gzip), refresh

    def ahead(self, req: Request) -> tuple[float, MetricsVariant, Callable[[], None]] | None:
        """For a scrape just answered: when to render ahead of that scraper's next visit
        (seconds from now), the variant and the render to run (on a worker thread), or
        None (see :meth:`RenderCache.visited`)."""
        if req.path != self._metrics_path or req.method not in ("GET", "HEAD"):
            return None
        variant, want_gzip = self._variant(req)
        delay = self.renders.visited(variant)
        if delay is None:
            return None
        return delay, variant, lambda: self.renders.refresh(variant, want_gzip)

    def _variant(self, req: Request) -> tuple[MetricsVariant, bool]:
        # As prometheus-client's own WSGI app: content negotiation, gzip, name[] filters;
        # an Accept header it cannot parse (a version that is not a number) gets the
        # default text format, as the Go client does, not a 500 and a logged traceback.
        try:
            encoder, content_type = choose_encoder(req.headers.get("Accept", ""))
        except (TypeError, ValueError):
            encoder, content_type = choose_encoder("")
        names = tuple(sorted(set(parse_qs(req.query).get("name[]", []))))
        return MetricsVariant(content_type, names, encoder), gzip_accepted(
            req.headers.get("Accept-Encoding", "")
        )

    def _metrics_response(self, variant: MetricsVariant, entry: Rendered, gz: bool) -> Response:
        if gz:
            return Response(
                200,
                entry.gzipped(),
                (("Content-Type", variant.content_type), ("Content-Encoding", "gzip")),
            )
        return Response(200, entry.body, (("Content-Type", variant.content_type),))

    def _metrics(self, req: Request) -> Response:
        variant, want_gzip = self._variant(req)
        return self._metrics_response(variant, self.renders.get(variant), want_gzip)

    def _render(self, variant: MetricsVariant) -> bytes:
        registry = self.ep.registry
        if variant.names:
            return variant.encoder(registry.restricted_registry(list(variant.names)))
        return variant.encoder(registry)

    def _health(self, _: Request) -> Response:
        report = self.ep.health()
        code = 503 if report.state == UNHEALTHY else 200
        return self.text(
            code, json.dumps(report.to_dict(), indent=2).encode() + b"\n", "application/json"
        )

    def _ready(self, _: Request) -> Response:
        if self.ep.ready():
            return self.text(200, b"Ready\n")
        return self.text(503, b"Not ready\n")

    def _reload(self, _: Request) -> Response:
        outcome = self.ep.reload()
        body: dict[str, Any] = {
            "status": "success" if outcome.ok else "error",
            "message": outcome.message,
        }
        if outcome.restart_required:
            body["restart_required"] = list(outcome.restart_required)
        return self.text(
            200 if outcome.ok else 500, json.dumps(body).encode() + b"\n", "application/json"
        )


# ---------------------------------------------------------------- the transport (I/O shell)


class _Watched(httputil.HTTPMessageDelegate):
    """Pass a request through, telling the server when its head has fully arrived."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, on_head: Callable[[], None]) -> None:
        self._inner = inner
        self._on_head = on_head

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self._on_head()
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        self._inner.finish()

    def on_connection_close(self) -> None:
        self._inner.on_connection_close()


_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _CasedHeaders(httputil.HTTPHeaders):
    """Response headers sent with the names spelt as given (Tornado would title-case them)."""

    def add_cased(self, name: str, value: str) -> None:
        self.__dict__.setdefault("_spelling", {})[name.lower()] = name
        self.add(name, value)

    def get_all(self) -> Iterator[tuple[str, str]]:
        spelling: dict[str, str] = self.__dict__.get("_spelling", {})
        for name, value in super().get_all():
            yield spelling.get(name.lower(), name), value


class _CappedServer(_TornadoServer):
    """Tornado's HTTP server with a connection cap that sheds the longest-idle connection.

    A connection is idle from the moment it may send a request head until the head has
    fully arrived (so a slowloris is idle however many bytes it trickles); the oldest
    idle one is closed to make room. When every connection is busy with a request, the
    newcomer is closed instead.
    """

    def initialize(
        self,
        *args: Any,
        max_connections: int = 512,
        tls_context: Callable[[], ssl.SSLContext | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        # Asked for each new connection, as exporter-toolkit's GetConfigForClient: a
        # rotated certificate is served from the next handshake on.
        self._tls_context = tls_context
        self._idle: OrderedDict[HTTP1ServerConnection, None] = OrderedDict()
        self._closing: set[HTTP1ServerConnection] = set()
        self.shed = 0

    def open_connections(self) -> int:
        return len(self._connections) - len(self._closing)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_from(sock)

    def _accept_from(self, sock: socket.socket) -> Callable[[], None]:
        """Accept as Tornado does, but pause for a second when out of file descriptors.

        Tornado's own accept handler raises on EMFILE and is called again at once, for
        as long as the connection waits: a busy loop. Pausing leaves the connection in
        the backlog until something (a closed idle connection, a finished capture file)
        frees a descriptor.
        """
        loop = IOLoop.current()
        state = {"listening": True, "removed": False}

        def resume() -> None:
            if not state["removed"] and not state["listening"]:
                loop.add_handler(sock, on_readable, IOLoop.READ)
                state["listening"] = True

        def on_readable(_fd: Any, _events: int) -> None:
            for _ in range(128):  # as Tornado: a bounded batch, then let others run
                try:
                    conn, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno not in _OUT_OF_RESOURCES:
                        raise
                    log.warning("cannot accept a connection; pausing for a second", exc_info=True)
                    loop.remove_handler(sock)
                    state["listening"] = False
                    loop.call_later(1.0, resume)
                    return
                if self._tls_context is not None:
                    self.ssl_options = self._tls_context() or self.ssl_options
                self._handle_connection(conn, address)

        def remove() -> None:
            state["removed"] = True
            if state["listening"]:
                loop.remove_handler(sock)
                state["listening"] = False

        loop.add_handler(sock, on_readable, IOLoop.READ)
        return remove

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        if self.open_connections() >= self.max_connections:
            self.shed += 1
            if not self._idle:
                stream.close()
                return
            oldest, _ = self._idle.popitem(last=False)
            self._closing.add(oldest)
            oldest.stream.close()
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        conn = cast(HTTP1ServerConnection, server_conn)
        if conn not in self._closing:
            self._idle[conn] = None
            self._idle.move_to_end(conn)
        inner = super().start_request(server_conn, request_conn)
        return _Watched(inner, lambda: self._idle.pop(conn, None))

    def on_close(self, server_conn: object) -> None:
        conn = cast(HTTP1ServerConnection, server_conn)
        self._idle.pop(conn, None)
        self._closing.discard(conn)
        super().on_close(server_conn)


_REFRESH_DELAY = 0.02  # seconds; well inside the render's max_age - refresh_after
_MAX_AHEAD = 16  # variants with a render planned ahead at once (as RenderCache's entries)


def _log_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("metrics refresh failed", exc_info=fut.exception())


def parse_listen_address(addr: str) -> tuple[str, int]:
    """Split ``host:port`` / ``:port`` / ``[::1]:port``; raise ValueError with a clear reason."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--web.listen-address: {addr!r} is not host:port")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """An HTTP(S) server bound at construction (so port 0 is resolved at once)."""

    def __init__(
        self,
        address: str,
        endpoints: Endpoints,
        web: WebConfigSource,
        limits: HttpLimits | None = None,
    ) -> None:
        host, port = parse_listen_address(address)
        self.limits = limits or HttpLimits()
        self.max_connections = effective_max_connections(self.limits)
        self._socket = _listen(host, port, self.limits.backlog)
        self._bound = self._socket.getsockname()[:2]
        self._web = web
        self._routes = Routes(endpoints)
        self._tls = web.ssl_context is not None  # plain or TLS for the socket's life
        self.scheme = "https" if self._tls else "http"
        self._workers = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="http")
        self._reloads = ThreadPoolExecutor(1, thread_name_prefix="http-reload")
        self._bcrypt = ThreadPoolExecutor(1, thread_name_prefix="http-auth")
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._server: _CappedServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # renders planned ahead of a scraper's next visit, one per variant
        self._ahead: dict[MetricsVariant, asyncio.TimerHandle] = {}
        if not log.isEnabledFor(logging.DEBUG):
            # Tornado logs each broken client (bad TLS, malformed request) at info/warning:
            # hostile clients must not be able to flood the log.
            logging.getLogger("tornado.general").setLevel(logging.ERROR)

    @property
    def address(self) -> str:
        host, port = str(self._bound[0]), self._bound[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def metrics_changed(self) -> None:
        """The next scrape must see the registry as it is now (a reload, a health change)."""
        self._routes.renders.invalidate()

    @property
    def metrics_renders(self) -> int:
        """How many times /metrics was rendered (for tests and debugging)."""
        return self._routes.renders.renders

    @property
    def open_connections(self) -> int:
        """Connections the server holds now (for tests and debugging)."""
        return self._server.open_connections() if self._server else 0

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stopping.set)
            self._thread.join(10)
        else:
            self._socket.close()
        for pool in (self._workers, self._reloads, self._bcrypt):
            pool.shutdown(wait=False, cancel_futures=True)

    # -- event loop thread

    def _run(self) -> None:
        try:
            asyncio.run(self._serve_forever())
        finally:
            self._started.set()

    async def _serve_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        lim = self.limits
        server = _CappedServer(
            self._on_request,
            ssl_options=self._web.ssl_context,
            tls_context=(lambda: self._web.ssl_context) if self._tls else None,
            idle_connection_timeout=lim.header_timeout,
            body_timeout=lim.body_timeout,
            max_header_size=lim.max_header_bytes,
            max_body_size=lim.max_body_bytes,
            max_buffer_size=max(lim.max_header_bytes, lim.max_body_bytes) + 64 * 1024,
            max_connections=self.max_connections,
        )
        self._server = server
        server.add_sockets([self._socket])
        self._started.set()
        await self._stopping.wait()
        server.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(), 5)
        except TimeoutError:
            log.warning("http connections still open at shutdown")

    def _on_request(self, request: httputil.HTTPServerRequest) -> None:
        url = urlsplit(request.uri or "")
        req = Request(
            method=request.method or "",
            path=url.path,
            query=url.query,
            headers=request.headers,
            client=request.remote_ip or "",
        )
        try:
            web: WebConfig | None = self._web.current()
        except WebConfigError:
            web = None
        verdict = None if web is None else _quick_verdict(req, web)
        tried = False
        if web is not None and verdict is True:
            self._plan_ahead(req)  # as it arrives: the schedule is of arrivals
            # A scrape with a fresh render is answered right here, in this loop iteration:
            # under load every further iteration (a task step, a hop to a worker thread
            # and back) waits for the GIL, which is most of a scrape's latency.
            try:
                resp, refresh = self._routes.respond_now(req)
                tried = True
            except Exception:  # answered (500, logged) on a worker thread, as any endpoint
                resp, refresh = None, None
            self._start_refresh(refresh)
            if resp is not None:
                self._log_request(req)
                sent = self._send(request, resp, tuple(web.headers.items()))
                if sent is not None and not sent.done():
                    self._track(self._deadline(request, sent))
                return
        self._track(self._serve(request, req, web, verdict, tried))

    def _track(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _plan_ahead(self, req: Request) -> None:
        """Render ahead of this scraper's next visit if its visits keep a schedule."""
        try:
            plan = self._routes.ahead(req)
        except Exception:  # planning is an optimisation: never fail a scrape for it
            log.exception("planning a render ahead failed")
            return
        if plan is None:
            return
        delay, variant, refresh = plan
        old = self._ahead.pop(variant, None)
        if old is not None:
            old.cancel()
        if len(self._ahead) >= _MAX_AHEAD:
            return
        loop = asyncio.get_running_loop()

        def start() -> None:
            self._ahead.pop(variant, None)
            loop.run_in_executor(self._workers, refresh).add_done_callback(_log_failure)

        self._ahead[variant] = loop.call_later(delay, start)

    def _start_refresh(self, refresh: Callable[[], None] | None) -> None:
        if refresh is None:
            return
        loop = asyncio.get_running_loop()

        def start() -> None:
            loop.run_in_executor(self._workers, refresh).add_done_callback(_log_failure)

        # A little later: scrapers that arrive together (HA pairs, a benchmark's threads)
        # are answered from the render they share before the new one takes the GIL.
        loop.call_later(_REFRESH_DELAY, start)

    async def _serve(
        self,
        request: httputil.HTTPServerRequest,
        req: Request,
        web: WebConfig | None,
        verdict: bool | None,
        tried_now: bool,
    ) -> None:
        if web is None:
            # As exporter-toolkit: an invalid web config answers 500 (the reason is logged).
            await self._write(request, self._routes.text(500, b"Internal Server Error\n"), ())
            return
        if verdict is None:
            verdict = await self._verify(req, web)
            if verdict:
                self._plan_ahead(req)  # just authorised (bcrypt)
        if verdict:
            try:
                resp = await self._respond(req, tried_now)
            except Exception:
                log.exception("http endpoint failed", extra={"path": req.path})
                resp = self._routes.text(500, b"Internal Server Error\n")
        else:
            resp = self._routes.unauthorised()
        self._log_request(req)
        await self._write(request, resp, tuple(web.headers.items()))

    def _log_request(self, req: Request) -> None:
        log.debug(
            "http request",
            extra={"client": req.client, "method": req.method, "path": req.path},
        )

    async def _respond(self, req: Request, tried_now: bool) -> Response:
        if not tried_now:  # authorised by bcrypt, just now: a fresh render may be there
            resp, refresh = self._routes.respond_now(req)
            self._start_refresh(refresh)
            if resp is not None:
                return resp
        pool: Executor = self._reloads if self._routes.is_reload(req) else self._workers
        return await asyncio.get_running_loop().run_in_executor(pool, self._routes.respond, req)

    async def _verify(self, req: Request, web: WebConfig) -> bool:
        """After a precheck that took a throttle token: bcrypt, on its own thread.

        A wrong-password flood queues there, not in the scrapes.
        """
        creds = credentials(req)
        assert creds is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._bcrypt, web.verify, creds[0], creds[1], req.client
        )

    def _send(
        self,
        request: httputil.HTTPServerRequest,
        resp: Response,
        extra: tuple[tuple[str, str], ...],
    ) -> asyncio.Future[None] | None:
        """Start writing a response; return the future of its write (None: connection gone)."""
        conn = cast(HTTP1Connection, request.connection)
        headers = _CasedHeaders()
        for k, v in (*resp.headers, *extra):
            headers.add_cased(k, v)
        headers.add_cased("Content-Length", str(len(resp.body)))
        body = b"" if request.method == "HEAD" else resp.body
        start = httputil.ResponseStartLine("HTTP/1.1", resp.status, HTTPStatus(resp.status).phrase)
        try:
            sent = conn.write_headers(start, headers, body or None)
            sent.add_done_callback(lambda f: f.cancelled() or f.exception())
            conn.finish()
        except (iostream.StreamClosedError, httputil.HTTPOutputError):
            return None
        return cast("asyncio.Future[None]", sent)

    async def _deadline(
        self, request: httputil.HTTPServerRequest, sent: asyncio.Future[None]
    ) -> None:
        """Drop a client that does not read its response within the write timeout."""
        try:
            await asyncio.wait_for(asyncio.shield(sent), self.limits.write_timeout)
        except TimeoutError:
            cast(HTTP1Connection, request.connection).stream.close()
        except (iostream.StreamClosedError, httputil.HTTPOutputError):
            pass

    async def _write(
        self,
        request: httputil.HTTPServerRequest,
        resp: Response,
        extra: tuple[tuple[str, str], ...],
    ) -> None:
        sent = self._send(request, resp, extra)
        if sent is not None:
            await self._deadline(request, sent)


def _quick_verdict(req: Request, web: WebConfig) -> bool | None:
    """Authorised (True), refused (False), or None: bcrypt must decide (a token was taken)."""
    if not web.users:
        return True
    creds = credentials(req)
    if creds is None:
        return False
    return web.precheck(creds[0], creds[1], req.client)
