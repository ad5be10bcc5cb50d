"""Config reload, all or nothing: requested from anywhere, served on the daemon thread.

`ConfigHolder` holds the running config and swaps in a new one only when the file is
valid and everything it needs (models) could be built off to the side. `Reloader` takes
the requests (SIGHUP, ``POST /-/reload``), serves them between two events of the main
loop, prepares the new components without changing what runs, then commits them in one
step that only swaps references; and it records reloads in the metrics and the log.

May import (ours): `config`, `http_server` (`ReloadOutcome` only), `metrics`, `models`,
`recording` and this package's `parts` and `component_errors`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import recording
from ..config import Config, ConfigError, load_config, read_config_file, restart_required_changes
from ..http_server import ReloadOutcome
from ..models import ModelError

if TYPE_CHECKING:
    from ..analysis import AnalyzerSetup
    from ..metrics import Metrics
    from ..summarise import Summariser
    from ..suppression import SuppressionRules
    from .component_errors import ComponentErrors
    from .parts import Parts

log = logging.getLogger("netmon_exporter")


class ReloadError(Exception):
    """A valid config that cannot be applied (e.g. its model file cannot be loaded)."""


def _digest(path: Path) -> str:
    # Bounded like load_config: a config symlinked to /dev/zero must not be read forever.
    return hashlib.sha256(read_config_file(path)).hexdigest()


@dataclass
class ConfigHolder:
    """SafeConfig: reloads are requested anywhere but validated and swapped in one place."""

    path: Path
    config: Config
    digest: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, path: Path) -> ConfigHolder:
        cfg = load_config(path)
        return cls(path, cfg, _digest(path))

    def try_reload(self, prepare: Callable[[Config, Config], Callable[[], None]]) -> ReloadOutcome:
        """Validate the file and swap it in, all or nothing.

        ``prepare(new, old)`` does everything that can fail (loading models) without
        changing what runs, and returns the commit step; only when it succeeds is the
        config swapped and the commit step run.
        """
        with self.lock:
            try:
                digest = _digest(self.path)
            except ConfigError as exc:
                return ReloadOutcome(False, "; ".join(exc.errors))
            if digest == self.digest:
                return ReloadOutcome(True, "configuration unchanged")
            try:
                new = load_config(self.path)
            except ConfigError as exc:
                return ReloadOutcome(False, "; ".join(exc.errors))
            try:
                commit = prepare(new, self.config)
            except ReloadError as exc:
                return ReloadOutcome(False, str(exc))
            restart = tuple(restart_required_changes(self.config, new))
            self.config, self.digest = new, digest
            commit()
            msg = "configuration reloaded"
            if restart:
                msg += "; these changes need a restart to take effect: " + ", ".join(restart)
            return ReloadOutcome(True, msg, restart)


class Reloader:
    """Reload requests from any thread, served (and applied) on the daemon thread."""

    def __init__(
        self,
        holder: ConfigHolder,
        parts: Parts,
        metrics: Metrics,
        errors: ComponentErrors,
        external_url: str,
    ) -> None:
        self.holder = holder
        self.parts = parts
        self.m = metrics
        self._errors = errors
        self.external_url = external_url  # --web.external-url (alerts' generatorURL)
        self.requests: queue.Queue[concurrent.futures.Future[ReloadOutcome] | None] = queue.Queue()
        # told after every reload, before its requester hears of it (the HTTP server's
        # /metrics renders are then stale: POST /-/reload, then a scrape, sees the new config)
        self.after_reload: Callable[[], None] = lambda: None

    def request(self) -> concurrent.futures.Future[ReloadOutcome]:
        fut: concurrent.futures.Future[ReloadOutcome] = concurrent.futures.Future()
        self.requests.put(fut)
        return fut

    def serve(self, final: bool = False) -> None:
        """Answer every waiting request: reload, or (``final``) refuse while shutting down."""
        while True:
            try:
                fut = self.requests.get_nowait()
            except queue.Empty:
                return
            if fut is None:
                continue
            if final:
                fut.set_result(ReloadOutcome(False, "shutting down"))
                continue
            outcome = self.reload()
            self.after_reload()
            fut.set_result(outcome)

    def reload(self) -> ReloadOutcome:
        self.m.reloads.inc()
        outcome = self.holder.try_reload(self._prepare)
        if not outcome.ok:
            self.m.reloads_failed.inc()
            self.m.reload_successful.set(0)
            self.m.errors.labels("config").inc()
            log.error(
                "configuration reload failed; keeping the old configuration",
                extra={"file": str(self.holder.path), "err": outcome.message},
            )
            return outcome
        for key in outcome.restart_required:
            log.warning("setting changed but needs a restart", extra={"key": key})
        self.m.reload_successful.set(1)
        self.m.reload_success_ts.set(time.time())
        log.info(outcome.message, extra={"file": str(self.holder.path)})
        return outcome

    def _prepare(self, cfg: Config, old: Config) -> Callable[[], None]:
        """Build everything the new config needs off to the side; change nothing that runs.

        Whatever can fail (models) fails here and leaves every component as it was; the
        returned step only swaps references, which cannot fail half-way.
        """
        p = self.parts
        try:
            setup = p.analyzer.prepare(cfg.detectors, cfg.models)
        except ModelError as exc:
            self.m.errors.labels("model").inc()
            raise ReloadError(f"models: {exc}") from None
        summariser = type(p.summariser)(cfg.llm) if cfg.llm != old.llm else None
        suppression = (
            type(p.suppression).from_config(cfg.ignore) if cfg.ignore != old.ignore else None
        )
        return lambda: self._apply(cfg, old, setup, summariser, suppression)

    def _apply(
        self,
        cfg: Config,
        old: Config,
        setup: AnalyzerSetup,
        summariser: Summariser | None,
        suppression: SuppressionRules | None,
    ) -> None:
        """Swap in what :meth:`_prepare` built (on the daemon thread, between windows).

        The reporter and pusher threads keep the object they hold for a call in progress
        (immutable hand-off); errors that call reports for the old settings are ignored.
        """
        with self.parts.analysis_lock:  # between two windows' analyses, never during one
            p = self.parts
            p.analyzer.commit(setup)
            p.ingest.apply_config(cfg)
            p.aggregator.reconfigure(cfg.windows)
            w = cfg.windows
            if (w.top_talkers, w.top_talker_addresses) != (
                old.windows.top_talkers,
                old.windows.top_talker_addresses,
            ):  # the ranks (or addresses) change now; the values come with the next window
                recording.record_top_talkers(self.m, [], w.top_talkers, w.top_talker_addresses)
            if summariser is not None:
                p.summariser = summariser
                self._errors.reset("llm")
            if cfg.alertmanager != old.alertmanager or cfg.alerting != old.alerting:
                # Incidents are kept: a reload neither re-pages nor forgets what is open.
                p.pusher.reconfigure(cfg.alertmanager, cfg.alerting, self.external_url)
                if cfg.alertmanager != old.alertmanager:
                    self._errors.reset("alertmanager")
            if suppression is not None:
                p.suppression = suppression
            p.record_config(self.m, cfg)
