"""The long-running daemon: flags, start-up, HTTP, signals, and the main event loop.

Data flows one way: ingest (watcher, ledger, workers) emits file events; the main
loop records them, feeds flows into windows, analyses closed windows, hands
reports to the reporter thread (LLM summary + JSON) and detections to the
alert pusher thread. A slow LLM or a dead Alertmanager never blocks this loop.
Each of those jobs is a collaborator in ``runtime/`` (see its docstring); this module
wires them. Only ``cli`` imports it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from . import compiled, hash_key, heap, recording
from .build_info import build_info
from .config import ConfigError
from .health import HealthReport
from .http_server import Endpoints, HttpServer, ReloadOutcome, parse_listen_address
from .logging_setup import FORMATS, LEVELS, setup_logging
from .metrics import Metrics, build_metrics
from .models import ModelError
from .process_metrics import WorkerProcessCollector
from .runtime.alerts import Alerts
from .runtime.component_errors import ComponentErrors
from .runtime.events import EventRecorder
from .runtime.health_monitor import HealthMonitor
from .runtime.parts import Parts
from .runtime.reload import ConfigHolder, Reloader
from .runtime.reload import ReloadError as ReloadError  # re-exported
from .runtime.reports import Reports
from .runtime.windows import Windows
from .web_config import LiveWebConfig, WebConfig, WebConfigError, load_web_config

if TYPE_CHECKING:
    from .alerting import AlertPusher
    from .analysis import Analyzer
    from .ingest.service import IngestService
    from .summarise import Summariser
    from .suppression import SuppressionRules
    from .window import WindowAggregator

log = logging.getLogger("netmon_exporter")

SWITCH_INTERVAL_SECONDS = 0.001  # how often a thread holding the GIL lets others run

DEFAULT_PORT = 9864
HEALTH_PERIOD_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 30.0  # --config.check gives up (exit 1) after this long


class _FlagParser(argparse.ArgumentParser):
    """argparse as Prometheus's kingpin behaves: whole flag names only, each flag once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)


class _Once(argparse.Action):
    """Store a flag's value, refusing a second occurrence (argparse keeps the last)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        self.flag_value = kwargs.pop("flag_value", None)
        if self.flag_value is not None:
            kwargs["nargs"] = 0
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen: set[str] = namespace.__dict__.setdefault("_flags_seen", set())
        if self.dest in seen:
            values_given = (
                "" if self.nargs == 0 else f" ({getattr(namespace, self.dest)!r}, then {values!r})"
            )
            parser.error(
                f"flag {self.option_strings[0]} given more than once{values_given}; give it once"
            )
        seen.add(self.dest)
        setattr(namespace, self.dest, self.flag_value if self.flag_value is not None else values)


class _Version(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(build_info().version_text(parser.prog))
        parser.exit()


def build_arg_parser() -> argparse.ArgumentParser:
    """Return the daemon's flags, named and behaving as in Prometheus and its exporters."""
    p = _FlagParser(
        prog="netmon-exporter",
        description="Process rotated packet captures and flow CSVs into flows, detections and "
        "Prometheus metrics. Sub-commands: flows, train, evaluate "
        "(netmon-exporter COMMAND --help).",
    )

    def flag(name: str, dest: str, help: str, **kwargs: Any) -> None:
        p.add_argument(name, dest=dest, action=_Once, help=help, **kwargs)

    flag(
        "--config.file",
        "config_file",
        "Configuration file (default: %(default)s).",
        default="config.yaml",
        metavar="PATH",
    )
    flag(
        "--config.check",
        "config_check",
        "Validate the configuration (and the models and web config it needs), print OK or "
        "every error, and exit 0 or 1.",
        default=False,
        flag_value=True,
    )
    flag(
        "--web.listen-address",
        "listen_address",
        "Address to listen on (default: %(default)s; port 0 picks a free one).",
        default=f":{DEFAULT_PORT}",
        metavar="HOST:PORT",
    )
    flag(
        "--web.telemetry-path",
        "telemetry_path",
        "Path under which to expose metrics, below --web.route-prefix (default: %(default)s).",
        default="/metrics",
        metavar="PATH",
    )
    flag(
        "--web.config.file",
        "web_config_file",
        "exporter-toolkit web config file for TLS and basic auth (promtool check web-config "
        "accepts it); re-read when it or its certificate files change.",
        default="",
        metavar="PATH",
    )
    flag(
        "--web.external-url",
        "external_url",
        "The URL under which netmon-exporter is reachable from outside (behind a reverse "
        "proxy, say); used in links it hands out. Its path is the default route prefix. "
        "Default: http(s)://<hostname>:<port>/ from --web.listen-address.",
        default="",
        metavar="URL",
    )
    flag(
        "--web.route-prefix",
        "route_prefix",
        "Prefix for every HTTP endpoint (/metrics, /health, /-/...). "
        "Default: the path of --web.external-url, else /.",
        default=None,
        metavar="PATH",
    )
    flag(
        "--log.level",
        "log_level",
        "Only log messages with the given severity or above. One of: "
        f"{', '.join(LEVELS)} (default: %(default)s).",
        default="info",
        choices=LEVELS,
        metavar="LEVEL",
    )
    flag(
        "--log.format",
        "log_format",
        f"Output format of log messages. One of: {', '.join(FORMATS)} (default: %(default)s).",
        default="logfmt",
        choices=FORMATS,
        metavar="FORMAT",
    )
    p.add_argument("--version", action=_Version, help="Show the version and build, and exit.")
    return p


def web_urls(
    external: str, route_prefix: str | None, listen_address: str, tls: bool
) -> tuple[str, str]:
    """Return the external URL and route prefix as Prometheus derives them from the flags.

    The external URL defaults to ``http(s)://<hostname>:<port>/``; its path loses trailing
    slashes and gains a leading one. The route prefix defaults to that path and is
    always ``/`` followed by its segments. Raise ValueError saying what is wrong.
    """
    if not external:
        _, port = parse_listen_address(listen_address)
        scheme = "https" if tls else "http"
        external = f"{scheme}://{socket.gethostname()}:{port}/"
    if external[:1] in "\"'" or external[-1:] in "\"'":
        raise ValueError(f"--web.external-url: {external!r} must not begin or end with quotes")
    url = urllib.parse.urlsplit(external)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(
            f"--web.external-url: {external!r} is not an absolute http(s) URL "
            "(e.g. https://netmon.example.com/netmon/)"
        )
    if url.username is not None or url.password is not None:
        raise ValueError("--web.external-url: must not hold credentials (user:password@)")
    if url.query or url.fragment:
        raise ValueError("--web.external-url: must not have a query or fragment")
    path = url.path.rstrip("/")
    if path and not path.startswith("/"):
        path = "/" + path
    external = urllib.parse.urlunsplit((url.scheme, url.netloc, path, "", ""))
    prefix = path if route_prefix is None else route_prefix
    prefix = "/" + prefix.strip("/")
    if any(part in (".", "..") for part in prefix.split("/")) or "//" in prefix:
        raise ValueError(f"--web.route-prefix: {prefix!r} must be a plain path")
    return external, prefix


# ----------------------------------------------------------------------------- daemon


class Daemon:
    """Wires the stages together and runs the main loop.

    The work is done by collaborators in ``runtime/``: ``events`` (ingest events),
    ``windows`` (closed window → analysis → triage → report), ``alerts`` (triage and the
    pusher thread), ``reports`` (the reporter thread), ``reloader`` (all-or-nothing
    reload) and ``monitor`` (health). The daemon owns start-up, the loop and shutdown.
    """

    def __init__(
        self,
        holder: ConfigHolder,
        metrics: Metrics,
        telemetry_path: str,
        external_url: str = "",
    ) -> None:
        self.holder = holder
        self.m = metrics
        self.telemetry_path = telemetry_path
        self.external_url = external_url  # --web.external-url (alerts' generatorURL)
        self.stop_event = threading.Event()
        self.ready = False
        idle_since = time.time()
        # numba (the ingest service imports it) never loads SciPy's linear algebra for its
        # own sake; models still find it (see lean_start.py)
        from . import lean_start

        lean_start.skip_blas_probe()
        self.parts = Parts.build(holder.config, external_url)
        # LLM and Alertmanager errors, set from the reporter and pusher threads
        self._errors = errors = ComponentErrors()
        self.reloader = Reloader(holder, self.parts, metrics, errors, external_url)
        self.alerts = Alerts(holder, self.parts, metrics, errors, self.stop_event)
        self.reports = Reports(holder, self.parts, metrics, errors)
        self.windows = Windows(self.parts, metrics, self.alerts, self.reports, idle_since)
        self.events = EventRecorder(metrics, self.windows)
        self.monitor = HealthMonitor(
            holder, self.parts.ingest, metrics, errors, self.events.recent, self.windows.backlog
        )

    # -- the running components (see runtime/parts.py)
    @property
    def ingest(self) -> IngestService:
        return self.parts.ingest

    @property
    def aggregator(self) -> WindowAggregator:
        return self.parts.aggregator

    @property
    def analyzer(self) -> Analyzer:
        return self.parts.analyzer

    @property
    def summariser(self) -> Summariser:
        return self.parts.summariser

    @property
    def pusher(self) -> AlertPusher:
        return self.parts.pusher

    @property
    def suppression(self) -> SuppressionRules:
        return self.parts.suppression

    # -- lifecycle
    def start(self) -> None:
        # Several threads share the GIL here (ingest, analysis, reports, HTTP): handing it
        # over every 1 ms instead of 5 ms halves the tail of /metrics under load (p99
        # 27-60 ms -> 11-30 ms in bench/daemon.py) at no measurable cost to throughput.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        self._seed_counters()
        self.m.windows_kept.set(self.aggregator.reports_kept())  # reports already on disk
        w = self.holder.config.windows
        recording.record_top_talkers(self.m, [], w.top_talkers, w.top_talker_addresses)
        self.parts.record_config(self.m, self.holder.config)
        self.m.reload_successful.set(1)
        self.m.reload_success_ts.set(time.time())
        self.ingest.start()
        self.windows.start()
        self.alerts.start()
        self.update_health()
        heap.freeze_long_lived()  # what start-up loaded stays: later collections skip it
        self.ready = True

    def _seed_counters(self) -> None:
        """Start counters from what the ledger committed, so a restart neither loses nor
        double-counts work (a crash between two scrapes looks like no reset at all)."""
        try:
            totals = self.ingest.committed_totals()
        except Exception as exc:  # an unusable ledger shows up in health; don't die here
            log.warning("cannot read committed totals from the ledger", extra={"err": str(exc)})
            self.m.errors.labels("ledger").inc()
            return
        if totals is None:
            return
        recording.seed_from_totals(self.m, totals)

    def run(self) -> None:
        next_health = 0.0
        while not self.stop_event.is_set():
            self.reloader.serve()
            for event in self.ingest.poll_events(timeout=0.2):
                try:
                    self.events.handle(event)
                except Exception:  # one bad event must not stop the daemon
                    log.exception(
                        "failed to handle ingest event", extra={"event": type(event).__name__}
                    )
                    self.m.errors.labels("internal").inc()
            now = time.monotonic()
            if now >= next_health:
                next_health = now + HEALTH_PERIOD_SECONDS
                self._housekeeping()

    def shutdown(self) -> None:
        cfg = self.holder.config
        self.ready = False
        log.info(
            "shutting down", extra={"timeout_seconds": cfg.processing.shutdown_timeout_seconds}
        )
        deadline = time.monotonic() + cfg.processing.shutdown_timeout_seconds
        self.ingest.stop(timeout=cfg.processing.shutdown_timeout_seconds)
        # Results that arrived while stopping are still recorded.
        while events := self.ingest.poll_events(timeout=0):
            for event in events:
                self.events.handle(event)
        if not self.windows.drain(deadline):
            log.warning("shutdown deadline passed with windows still being analysed")
        # Reports still waiting for the LLM get the templated summary now; the one being
        # summarised may finish until the deadline.
        self.reports.shutdown(deadline)
        self.reloader.serve(final=True)

    def on_metrics_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` after every reload and health change, before anyone hears of it."""
        self.reloader.after_reload = fn
        self.monitor.on_change = fn

    def request_reload(self) -> concurrent.futures.Future[ReloadOutcome]:
        """Ask for a reload (from any thread); the main loop serves it between events."""
        return self.reloader.request()

    # -- health and housekeeping
    def _housekeeping(self) -> None:
        self.windows.flush_if_idle(self.holder.config)
        self.reports.reap()
        self.update_health()
        if heap.refreeze_if_grown():  # code loaded since (numba's kernels): skipped too
            log.debug("long-lived objects frozen", extra={"objects": gc.get_freeze_count()})

    def is_ready(self) -> bool:
        """Ready: started, not stopping, and able to record work (the ledger is open and ours).

        A second instance pointed at the same state directory is alive (``/-/healthy``)
        but not ready, because it cannot process anything.
        """
        return self.ready and self.ingest.status().ledger_open

    def update_health(self) -> HealthReport:
        return self.monitor.update()

    @property
    def health(self) -> HealthReport:
        return self.monitor.report


# ----------------------------------------------------------------------------- entry point


def check_config(path: str, web_config_file: str = "", timeout: float | None = None) -> int:
    """--config.check: load what start-up loads; print OK or every error; exit 0 or 1.

    Start-up loads the config file, the models it names and the web config file, and
    refuses to start if any of them fails; so does the check, so that a config the check
    passes is one the daemon accepts. ``timeout`` bounds the whole check: past it, the
    process prints FAILED and exits 1 whatever it is stuck in.
    """
    watchdog = None
    if timeout is not None:
        watchdog = threading.Timer(timeout, _check_timed_out, args=(path, timeout))
        watchdog.daemon = True
        watchdog.start()
    try:
        source, errors = _check_errors(path, web_config_file)
    finally:
        if watchdog is not None:
            watchdog.cancel()
    if errors:
        print(f"FAILED: {source}", file=sys.stderr)
        for err in errors:
            print(f"  {err}", file=sys.stderr)
        return 1
    print(f"OK: {path} is valid")
    return 0


def _check_errors(path: str, web_config_file: str) -> tuple[str, list[str]]:
    try:
        cfg = ConfigHolder.load(Path(path)).config
    except ConfigError as exc:
        return exc.source or path, exc.errors
    errors: list[str] = []
    try:
        from .analysis import Analyzer

        Analyzer(cfg.detectors, cfg.models, cfg.state.directory)  # as Daemon() loads models
    except ModelError as exc:
        errors.append(f"models: {exc}")
    try:
        load_web_config(web_config_file)
    except WebConfigError as exc:
        errors.append(str(exc))
    return path, errors


def _check_timed_out(path: str, timeout: float) -> None:
    print(
        f"FAILED: {path}\n  <check>: did not finish within {timeout:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)


class StartupError(Exception):
    """The daemon cannot start; the message is printed to stderr and logged."""

    def __init__(self, log_message: str, printed: list[str], **extra: Any) -> None:
        super().__init__(log_message)
        self.printed = printed
        self.extra = extra


_RESERVED_PATHS = ("/", "/health", "/-/healthy", "/-/ready", "/-/reload")


def _load_startup_config(
    args: argparse.Namespace,
) -> tuple[ConfigHolder, WebConfig | LiveWebConfig]:
    try:
        holder = ConfigHolder.load(Path(args.config_file))
        web: WebConfig | LiveWebConfig = (
            LiveWebConfig(args.web_config_file) if args.web_config_file else WebConfig()
        )
    except ConfigError as exc:
        raise StartupError(
            "invalid configuration; not starting",
            [f"config error: {err}" for err in exc.errors],
            file=exc.source or args.config_file,
            errors=exc.errors,
        ) from None
    except WebConfigError as exc:
        raise StartupError(
            "invalid web config; not starting", [f"web config error: {exc}"], err=str(exc)
        ) from None
    return holder, web


def _check_paths(args: argparse.Namespace, web: WebConfig | LiveWebConfig) -> tuple[str, str]:
    """Return the external URL and route prefix; refuse a telemetry path of another endpoint."""
    try:
        external_url, route_prefix = web_urls(
            args.external_url, args.route_prefix, args.listen_address, web.ssl_context is not None
        )
    except ValueError as exc:
        raise StartupError(
            "invalid flag; not starting", [f"flag error: {exc}"], err=str(exc)
        ) from None
    if not args.telemetry_path.startswith("/") or args.telemetry_path in _RESERVED_PATHS:
        raise StartupError(
            "--web.telemetry-path must be an absolute path not used by another endpoint",
            [],
            path=args.telemetry_path,
        )
    return external_url, route_prefix


def _registry() -> tuple[CollectorRegistry, Metrics]:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    WorkerProcessCollector(registry=registry)
    return registry, build_metrics(registry)


def _serve(
    args: argparse.Namespace,
    daemon: Daemon,
    registry: CollectorRegistry,
    web: WebConfig | LiveWebConfig,
    route_prefix: str,
) -> HttpServer:
    def reload_from_http() -> ReloadOutcome:
        try:
            return daemon.request_reload().result(timeout=60)
        except concurrent.futures.TimeoutError:
            return ReloadOutcome(False, "reload timed out")

    endpoints = Endpoints(
        registry=registry,
        health=lambda: daemon.health,
        ready=daemon.is_ready,
        reload=reload_from_http,
        telemetry_path=args.telemetry_path,
        route_prefix=route_prefix,
    )
    try:
        return HttpServer(args.listen_address, endpoints, web)
    except (OSError, ValueError) as exc:
        raise StartupError("cannot listen", [], address=args.listen_address, err=str(exc)) from None


def _install_signals(daemon: Daemon) -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP received, reloading configuration")
            daemon.request_reload()
        else:
            log.info("stop signal received", extra={"signal": signal.Signals(signum).name})
            daemon.stop_event.set()

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


def _log_start(
    args: argparse.Namespace, server: HttpServer, holder: ConfigHolder, urls: tuple[str, str]
) -> None:
    external_url, route_prefix = urls
    log.info(
        "Listening on",
        extra={
            "address": server.address,
            "scheme": server.scheme,
            "telemetry_path": args.telemetry_path,
            "route_prefix": route_prefix,
            "external_url": external_url,
        },
    )
    info = build_info()
    log.info(
        "starting netmon-exporter",
        extra={
            "version": info.version,
            "revision": info.revision,
            "branch": info.branch,
            "pid": os.getpid(),
            "config": str(holder.path),
        },
    )
    status = compiled.aot_status()  # kernels built ahead of time, or why numba's JIT runs them
    (log.info if status.startswith("in use") else log.warning)(
        "compiled kernels", extra={"ahead_of_time": status}
    )


def run_daemon(argv: list[str]) -> int:
    args = build_arg_parser().parse_args(argv)
    if args.config_check:
        return check_config(args.config_file, args.web_config_file, CHECK_TIMEOUT_SECONDS)
    setup_logging(args.log_level, args.log_format)
    hash_key.draw()  # before anything hashes traffic (workers get it with their tasks)
    try:
        holder, web = _load_startup_config(args)
        external_url, route_prefix = _check_paths(args, web)
        registry, metrics = _registry()
        try:
            daemon = Daemon(holder, metrics, args.telemetry_path, external_url)
        except ModelError as exc:
            raise StartupError(
                "cannot load a configured model; not starting",
                [f"model error: {exc}"],
                err=str(exc),
            ) from None
        server = _serve(args, daemon, registry, web, route_prefix)
        daemon.on_metrics_change(server.metrics_changed)
    except StartupError as exc:
        log.error(str(exc), extra=exc.extra)
        for line in exc.printed:
            print(line, file=sys.stderr)
        return 1
    _install_signals(daemon)
    server.start()
    _log_start(args, server, holder, (external_url, route_prefix))
    try:
        daemon.start()
        daemon.run()
    finally:
        daemon.stop_event.set()
        daemon.shutdown()
        server.stop()
        log.info("stopped")
    return 0
