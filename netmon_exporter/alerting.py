"""Incidents pushed to Alertmanager's v2 API (``POST /api/v2/alerts``).

Alertmanager expects its clients to behave like Prometheus: send every active
alert again and again (here every ``resend_interval_seconds``) with an ``endsAt``
in the near future, so that alerts resolve by themselves if the sender dies, and
send an explicit ``endsAt`` in the past once the condition is over.

:class:`AlertPusher` holds an :class:`~.incidents.IncidentBook` (one incident per
``Detection.key``, however many windows it lasts; see :mod:`.incidents` for its
life). The daemon's main loop calls :meth:`AlertPusher.observe` with each pushed
window's findings; a pusher thread calls :meth:`AlertPusher.due` and
:meth:`AlertPusher.push`. Nothing here raises for Alertmanager trouble or touches
metrics: :class:`PushResult` and :class:`~.incidents.Observed` say what happened and
the daemon records it.

Labels identify an alert for its whole life (Alertmanager identifies an alert by its
label set) and stay few and bounded: ``alertname`` (``Netmon`` + the detector in
CamelCase, e.g. ``NetmonPortScan``), ``category="security"`` (routed apart from the
``category="health"`` alerts of the rules), ``detector``, ``severity``, ``source``,
``target`` (length-capped), ``instance`` (the sensor: ``alerting.sensor`` or the host
name) and ``service``. Everything else (the incident's windows, latest and peak
evidence, summary) goes into annotations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from .config import AlertingConfig, AlertmanagerConfig
from .detection import Detection
from .incidents import Incident, IncidentBook, IncidentPolicy, Key, Observed
from .redaction import redact_secrets, redact_url, short_cause
from .text_safety import clean_text, plain_text

log = logging.getLogger(__name__)

SERVICE = "netmon-exporter"
#: The ``category`` label of pushed detections (the rules' health alerts carry "health").
CATEGORY = "security"
FALLBACK_ALERTNAME = "NetmonDetection"
#: Longest label value sent; longer ones are cut and suffixed with a hash so they stay distinct.
MAX_LABEL_CHARS = 128
#: Longest annotation value sent.
MAX_ANNOTATION_CHARS = 2048
#: After a failed push, the next attempt waits this long, doubling up to the resend interval.
RETRY_BASE_SECONDS = 5.0
_DETECTOR_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


def sensor_name(cfg: AlertingConfig) -> str:
    """Return the sensor's name: ``alerting.sensor``, else this host's name."""
    return cfg.sensor or socket.gethostname() or "unknown"


def incident_policy(am: AlertmanagerConfig, alerting: AlertingConfig) -> IncidentPolicy:
    """Return how incidents resolve and how many are held, from the config."""
    return IncidentPolicy(
        resolve_after_windows=alerting.resolve_after_windows,
        resolve_after_seconds=am.resolve_after_seconds,
        max_incidents=alerting.max_incidents,
    )


@dataclass(frozen=True)
class AlertIdentity:
    """What every alert of this exporter carries besides its finding."""

    sensor: str  # the instance label
    generator_url: str = ""  # alerting.generator_url template, or "" for external_url
    external_url: str = ""  # --web.external-url

    def link(self, inc: Incident) -> str:
        """Return the alert's generatorURL (the template filled in, URL-encoded)."""
        if not self.generator_url:
            return self.external_url
        det = inc.latest
        values = {
            "detector": det.detector,
            "source": det.source,
            "target": det.target,
            "from_ms": str(int(inc.first_window_start * 1000)),
            "to_ms": str(int(inc.last_window_end * 1000)),
        }
        quoted = {k: urllib.parse.quote(v, safe="") for k, v in values.items()}
        try:
            return self.generator_url.format(**quoted)
        except (KeyError, IndexError, ValueError):  # validated by config; never fatal here
            return self.external_url


@dataclass(frozen=True)
class UrlOutcome:
    """What one Alertmanager did with this push."""

    url: str  # credentials removed
    accepted: int  # alerts it accepted
    failed: int  # alerts it did not accept
    status: int | None  # HTTP status of the last request (None: no answer)
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0


@dataclass(frozen=True)
class PushResult:
    """One push: ``sent`` alerts accepted by at least one Alertmanager, ``failed`` by none.

    ``resolved`` counts the sent alerts that were resolutions; ``evicted`` the
    incidents dropped from the full book since the previous push; ``retries`` is 1
    when this push repeats a failed one (the daemon counts it as a retry of stage
    ``alertmanager``).
    """

    sent: int
    failed: int
    seconds: float
    errors: list[str] = field(default_factory=list)
    outcomes: tuple[UrlOutcome, ...] = ()
    resolved: int = 0
    evicted: int = 0
    retries: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0


@dataclass(frozen=True)
class _Pending:
    alert: dict[str, Any]
    key: Key | None  # None: a superseded label set, resolved once
    version: int
    resolved: bool


class AlertPusher:
    """Keep the incidents and push them to every configured Alertmanager.

    ``observe`` (main loop) and ``push`` (pusher thread) may run concurrently;
    pushes themselves are serialised. HTTP happens outside the state lock, so
    ``observe`` never waits for a slow Alertmanager. :meth:`reconfigure` applies a
    reloaded config and keeps the incidents (a restart starts with none).
    """

    def __init__(
        self,
        cfg: AlertmanagerConfig,
        alerting: AlertingConfig | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        external_url: str = "",
    ) -> None:
        alerting = alerting or AlertingConfig()
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._book = IncidentBook(incident_policy(cfg, alerting))
        self._delivered: dict[Key, int] = {}  # incident -> version last accepted
        self._fired_at: dict[Key, float] = {}  # incident -> when its firing was first accepted
        self._superseded: list[_Pending] = []
        self._last_ok_at: float | None = None
        self._consecutive_failures = 0
        self._next_retry_at: float | None = None
        self._evicted_since_push = 0
        self.evicted_total = 0
        self._configure(cfg, alerting, external_url)

    def _configure(self, cfg: AlertmanagerConfig, alerting: AlertingConfig, external: str) -> None:
        self._cfg = cfg
        self._urls = tuple(u.rstrip("/") for u in cfg.urls)
        self._sessions = {
            u: self._session if self._session is not None else requests.Session()
            for u in self._urls
        }
        self._identity = AlertIdentity(sensor_name(alerting), alerting.generator_url, external)
        self._book.policy = incident_policy(cfg, alerting)
        self.failures_by_url: dict[str, int] = {redact_url(u): 0 for u in self._urls}

    def __repr__(self) -> str:
        return f"AlertPusher(urls={[redact_url(u) for u in self._urls]!r})"

    def reconfigure(
        self,
        cfg: AlertmanagerConfig,
        alerting: AlertingConfig,
        external_url: str = "",
        now: float | None = None,
    ) -> None:
        """Apply a reloaded config, keeping every incident.

        New Alertmanager URLs hear of every incident at the next push. A new sensor
        name is a new label set: the alerts under the old one are sent once as resolved.
        """
        with self._push_lock, self._lock:
            old_urls, old_identity = self._urls, self._identity
            now = self._clock() if now is None else now
            self._configure(cfg, alerting, external_url)
            if self._identity.sensor != old_identity.sensor:
                for inc in self._book:
                    if inc.key in self._delivered:
                        old = self._alert(inc, now, True, inc.severity, old_identity)
                        self._superseded.append(_Pending(old, None, 0, True))
                self._delivered.clear()
                self._fired_at.clear()
            if self._urls != old_urls:
                self._delivered.clear()
                self._fired_at.clear()
                self._last_ok_at = self._next_retry_at = None
                self._consecutive_failures = 0
            if not self._urls:
                self._superseded.clear()
                self._forget_resolved()

    # ---------------------------------------------------------------- state

    def active_count(self) -> int:
        """Incidents currently held (active, or resolved and not yet delivered)."""
        with self._lock:
            return len(self._book)

    def active_keys(self) -> frozenset[Key]:
        """Keys of the active incidents (kept first when a window's findings are capped)."""
        with self._lock:
            return self._book.active_keys()

    def active_by_detector(self) -> dict[str, int]:
        """Count active (not resolved) incidents per detector, for a gauge in the daemon."""
        with self._lock:
            return self._book.active_by_detector()

    def incidents(self) -> list[Incident]:
        """Return the incidents held, least recently seen first (a snapshot, for tests)."""
        with self._lock:
            return list(self._book)

    def observe(self, findings: Iterable[Detection], now: float | None = None) -> Observed:
        """Record one pushed window's findings as seen at wall-clock ``now``.

        Every call is one window: incidents it does not mention move one window closer
        to resolution.
        """
        now = self._clock() if now is None else now
        with self._lock:
            observed = self._book.observe(findings, now)
            for esc in observed.escalated:
                if esc.incident.key in self._delivered:
                    # A new severity is a new label set for Alertmanager: end the old one.
                    old = self._alert(esc.incident, now, True, esc.previous, self._identity)
                    self._superseded.append(_Pending(old, None, 0, True))
            del self._superseded[: -self._book.policy.max_incidents]
            self._book.expire(now)
            if not self._urls:
                self._forget_resolved()
            for gone in [k for k in self._fired_at if self._book.get(k) is None]:
                self._delivered.pop(gone, None)
                del self._fired_at[gone]
            self._evicted_since_push += observed.evicted
            self.evicted_total += observed.evicted
        if observed.evicted:
            log.warning(
                "Incident book full (%d): forgot %d incident(s), resolved first; "
                "Alertmanager resolves the active ones when their endsAt passes",
                self._book.policy.max_incidents,
                observed.evicted,
            )
        return observed

    def _forget_resolved(self) -> None:
        for inc in self._book:
            if not inc.active:
                self._book.forget(inc.key)

    def due(self, now: float | None = None) -> bool:
        """Say whether :meth:`push` has something to send now."""
        now = self._clock() if now is None else now
        if not self._urls:
            with self._lock:
                self._book.expire(now)
                self._forget_resolved()
            return False
        with self._lock:
            self._book.expire(now)
            if self._next_retry_at is not None and now < self._next_retry_at:
                return False
            if self._superseded:
                return True
            if any(self._news(i, now) for i in self._book):
                return True
            if not len(self._book):
                return False
            return (
                self._last_ok_at is None
                or now - self._last_ok_at >= self._cfg.resend_interval_seconds
            )

    # ---------------------------------------------------------------- pushing

    def push(self, now: float | None = None) -> PushResult:
        """Send every held alert to every Alertmanager; never raises."""
        now = self._clock() if now is None else now
        with self._push_lock:
            started = time.monotonic()
            pending, evicted, retries = self._snapshot(now)
            if not pending or not self._urls:
                return PushResult(0, 0, time.monotonic() - started, evicted=evicted)
            size = self._cfg.max_alerts_per_push
            batches = [pending[i : i + size] for i in range(0, len(pending), size)]
            bodies = [_encode([p.alert for p in batch]) for batch in batches]
            if len(self._urls) == 1:
                per_url = [self._send_all(self._urls[0], bodies, batches)]
            else:
                with ThreadPoolExecutor(
                    max_workers=len(self._urls), thread_name_prefix="alertmanager-push"
                ) as pool:
                    per_url = list(
                        pool.map(lambda u: self._send_all(u, bodies, batches), self._urls)
                    )
            accepted = [
                any(accepted_batches[i] for _, accepted_batches in per_url)
                for i in range(len(batches))
            ]
            self._apply(now, batches, accepted)
            sent = sum(len(b) for b, ok in zip(batches, accepted, strict=True) if ok)
            resolved = sum(
                1 for b, ok in zip(batches, accepted, strict=True) if ok for p in b if p.resolved
            )
            outcomes = tuple(outcome for outcome, _ in per_url)
            errors = [o.error for o in outcomes if o.error]
            for o in outcomes:
                if not o.ok:
                    self.failures_by_url[o.url] = self.failures_by_url.get(o.url, 0) + 1
            result = PushResult(
                sent,
                len(pending) - sent,
                time.monotonic() - started,
                errors,
                outcomes,
                resolved,
                evicted,
                retries,
            )
        if result.failed:
            log.warning(
                "Alertmanager push: %d of %d alert(s) not delivered: %s",
                result.failed,
                len(pending),
                "; ".join(errors),
            )
        else:
            log.debug(
                "Alertmanager push: %d alert(s) delivered (%d resolved) in %.3fs",
                sent,
                resolved,
                result.seconds,
            )
        return result

    def _holding(self, inc: Incident, now: float) -> bool:
        """Whether a resolved incident is still sent as firing.

        Its firing alert must have been accepted, at least one resend interval ago,
        before the resolution goes out: a backlog of windows can open and resolve an
        incident within seconds, and a resolution that reaches Alertmanager before
        its group_wait has passed would notify nobody of a real attack.
        """
        fired = self._fired_at.get(inc.key)
        return fired is None or now - fired < self._cfg.resend_interval_seconds

    def _news(self, inc: Incident, now: float) -> bool:
        """Whether Alertmanager must hear of this incident now (not only at the resend)."""
        if inc.active:
            return self._delivered.get(inc.key) != inc.version
        return inc.key not in self._fired_at or not self._holding(inc, now)

    def _snapshot(self, now: float) -> tuple[list[_Pending], int, int]:
        with self._lock:
            self._book.expire(now)
            pending = list(self._superseded)
            self._superseded = []
            incidents = sorted(self._book, key=lambda i: (i.active, i.opened_at))
            for inc in incidents:
                resolved = not inc.active and not self._holding(inc, now)
                alert = self._alert(inc, now, resolved, inc.severity, self._identity)
                pending.append(_Pending(alert, inc.key, inc.version, resolved))
            evicted, self._evicted_since_push = self._evicted_since_push, 0
            retries = 1 if self._consecutive_failures else 0
        return pending, evicted, retries

    def _apply(self, now: float, batches: list[list[_Pending]], accepted: list[bool]) -> None:
        with self._lock:
            for batch, ok in zip(batches, accepted, strict=True):
                for p in batch:
                    if p.key is None:
                        if not ok:
                            self._superseded.append(p)
                        continue
                    inc = self._book.get(p.key)
                    if not ok or inc is None:
                        continue
                    if not p.resolved:  # fired, even if the incident changed meanwhile
                        self._fired_at.setdefault(p.key, now)
                    if inc.version != p.version:
                        continue
                    if inc.active or p.resolved:
                        self._delivered[p.key] = p.version
                    if p.resolved and self._book.forget(p.key, p.version):
                        del self._delivered[p.key]
                        del self._fired_at[p.key]
            del self._superseded[: -self._book.policy.max_incidents]
            if all(accepted):
                self._last_ok_at = now
                self._consecutive_failures = 0
                self._next_retry_at = None
            else:
                self._consecutive_failures += 1
                wait = min(
                    self._cfg.resend_interval_seconds,
                    RETRY_BASE_SECONDS * 2 ** (self._consecutive_failures - 1),
                )
                self._next_retry_at = now + wait

    def _send_all(
        self, url: str, bodies: list[bytes], batches: list[list[_Pending]]
    ) -> tuple[UrlOutcome, list[bool]]:
        started = time.monotonic()
        endpoint = url + "/api/v2/alerts"
        where = redact_url(endpoint)
        accepted_batches = [False] * len(batches)
        status: int | None = None
        error: str | None = None
        for i, body in enumerate(bodies):
            status, error = self._post(self._sessions[url], endpoint, where, body)
            if error is not None:
                break  # the rest would most likely fail the same way
            accepted_batches[i] = True
        accepted = sum(len(b) for b, ok in zip(batches, accepted_batches, strict=True) if ok)
        total = sum(len(b) for b in batches)
        outcome = UrlOutcome(
            redact_url(url), accepted, total - accepted, status, time.monotonic() - started, error
        )
        return outcome, accepted_batches

    def _post(
        self, session: requests.Session, endpoint: str, where: str, body: bytes
    ) -> tuple[int | None, str | None]:
        timeout = self._cfg.timeout_seconds
        try:
            resp = session.post(
                endpoint,
                data=body,
                timeout=(timeout, timeout),
                allow_redirects=False,
                headers={"Content-Type": "application/json"},
            )
        except requests.Timeout:
            return None, f"{where}: no answer within {timeout:g}s"
        except requests.ConnectionError as exc:
            return None, (
                f"{where}: cannot connect ({short_cause(exc)}); is Alertmanager "
                "running and alertmanager.urls right?"
            )
        except (requests.RequestException, ValueError) as exc:
            return None, f"{where}: request failed ({type(exc).__name__}); check alertmanager.urls"
        with resp:
            if 200 <= resp.status_code < 300:
                return resp.status_code, None
            text = plain_text(redact_secrets(resp.text[:600]), 300)
            hint = "" if resp.status_code >= 500 else " (is this Alertmanager's base URL?)"
            return resp.status_code, f"{where}: HTTP {resp.status_code}: {text}{hint}"

    # ---------------------------------------------------------------- payload

    def _alert(
        self, inc: Incident, now: float, resolved: bool, severity: str, identity: AlertIdentity
    ) -> dict[str, Any]:
        if resolved:
            ends = max(now, inc.opened_at)
        else:
            # Far enough ahead that the next resend (even a retried one) arrives first.
            ends = now + max(self._cfg.resolve_after_seconds, 2 * self._cfg.resend_interval_seconds)
        alert: dict[str, Any] = {
            "labels": build_labels(inc.latest, severity, identity.sensor),
            "annotations": build_annotations(
                inc.latest,
                inc.first_window_start,
                inc.last_window_end,
                windows=inc.windows,
                peak=inc.peak,
                severity=inc.severity,
            ),
            "startsAt": rfc3339(inc.opened_at),
            "endsAt": rfc3339(ends),
        }
        link = identity.link(inc)
        if link:
            alert["generatorURL"] = link
        return alert


# -------------------------------------------------------------------- labels and annotations


def alertname(detector: str) -> str:
    """Return ``Netmon`` + the detector in CamelCase (``port_scan`` -> ``NetmonPortScan``)."""
    if not _DETECTOR_RE.match(detector):
        return FALLBACK_ALERTNAME
    return "Netmon" + "".join(part.capitalize() for part in detector.split("_") if part)


def cap_label(value: str, limit: int = MAX_LABEL_CHARS) -> str:
    """Escape unsafe characters and cap the length, keeping distinct long values distinct."""
    text = clean_text(value)
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return clean_text(value, limit - 9) + "~" + digest


def build_labels(det: Detection, severity: str, sensor: str = "") -> dict[str, str]:
    """Return the alert's identifying labels (empty values left out, as Alertmanager does)."""
    labels = {
        "alertname": alertname(det.detector),
        "category": CATEGORY,
        "detector": cap_label(det.detector, 48),
        "severity": cap_label(severity, 16),
        "source": cap_label(det.source),
        "target": cap_label(det.target),
        "instance": cap_label(sensor),
        "service": SERVICE,
    }
    return {k: v for k, v in labels.items() if v}


def _evidence_text(evidence: dict[str, Any]) -> str:
    parts = []
    for k, v in evidence.items():
        if isinstance(v, float) and math.isfinite(v):
            v = round(v, 3)
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _evidence_json(evidence: dict[str, Any]) -> str:
    return json.dumps({str(k): v for k, v in evidence.items()}, sort_keys=True, default=str)


def build_annotations(
    det: Detection,
    first_seen: float,
    last_seen: float,
    *,
    windows: int = 1,
    peak: Detection | None = None,
    severity: str = "",
) -> dict[str, str]:
    """Return the human details: summary, the incident's life, latest and peak evidence.

    ``det`` is the latest finding; ``first_seen``/``last_seen`` the start of the
    incident's first window and the end of its last (data time).
    """
    peak = det if peak is None else peak
    summary = det.summary or f"{det.detector} from {det.source or '?'} to {det.target or '?'}"
    first, last = rfc3339(first_seen), rfc3339(last_seen)
    description = (
        f"{det.detector} ({severity or det.severity}) from {det.source or '?'} to "
        f"{det.target or '?'}: seen in {windows} window(s) from {first} to {last}."
    )
    evidence = _evidence_text(det.evidence)
    if evidence:
        description += f" Latest evidence: {evidence}."
    if peak is not det:
        description += f" Peak: {peak.summary or _evidence_text(peak.evidence)}."
    annotations = {
        "summary": summary,
        "description": description,
        "evidence": _evidence_json(det.evidence),
        "peak_evidence": _evidence_json(peak.evidence),
        "windows": str(windows),
        "window_start": rfc3339(det.window_start),
        "window_end": rfc3339(det.window_end),
        "first_seen": first,
        "last_seen": last,
    }
    return {k: clean_text(v, MAX_ANNOTATION_CHARS) for k, v in annotations.items()}


def rfc3339(ts: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with milliseconds, as Alertmanager parses it."""
    try:
        dt = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        dt = datetime.fromtimestamp(0, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _encode(alerts: list[dict[str, Any]]) -> bytes:
    return json.dumps(alerts, separators=(",", ":"), ensure_ascii=True).encode()
