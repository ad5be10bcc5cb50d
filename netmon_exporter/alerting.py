"""Detections pushed to Alertmanager's v2 API (``POST /api/v2/alerts``).

Alertmanager expects its clients to behave like Prometheus: send every active
alert again and again (here every ``resend_interval_seconds``) with an ``endsAt``
in the near future, so that alerts resolve by themselves if the sender dies, and
send an explicit ``endsAt`` in the past once the condition is over.

:class:`AlertPusher` keeps the set of active detections keyed by
``Detection.key``. The daemon's main loop calls :meth:`AlertPusher.observe` with
each window's detections; a pusher thread calls :meth:`AlertPusher.due` and
:meth:`AlertPusher.push`. A detection not observed again for
``resolve_after_seconds`` is sent once more as resolved and forgotten. Nothing
here raises for Alertmanager trouble or touches metrics: :class:`PushResult`
says what happened and the daemon records it.

Labels stay low-cardinality-safe and stable for the life of one detection
(Alertmanager identifies an alert by its label set): ``alertname``
(``Netmon`` + the detector in CamelCase, e.g. ``NetmonPortScan``), ``detector``,
``severity``, ``source``, ``target`` (length-capped) and ``service``. Everything
else (evidence, summary, window) goes into annotations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from .config import AlertmanagerConfig
from .detection import SEVERITY_RANK, Detection
from .redaction import redact_secrets, redact_url, short_cause
from .text_safety import clean_text, plain_text

log = logging.getLogger(__name__)

SERVICE = "netmon-exporter"
FALLBACK_ALERTNAME = "NetmonDetection"
#: Longest label value sent; longer ones are cut and suffixed with a hash so they stay distinct.
MAX_LABEL_CHARS = 128
#: Longest annotation value sent.
MAX_ANNOTATION_CHARS = 2048
#: Default bound of the active set (least recently observed detections are evicted first).
DEFAULT_MAX_ACTIVE = 10_000
#: After a failed push, the next attempt waits this long, doubling up to the resend interval.
RETRY_BASE_SECONDS = 5.0
_DETECTOR_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


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
    detections dropped from the full active set since the previous push;
    ``retries`` is 1 when this push repeats a failed one (the daemon counts it as
    a retry of stage ``alertmanager``).
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


@dataclass
class _Entry:
    detection: Detection
    severity: str
    labels: dict[str, str]
    first_seen: float
    last_seen: float
    resolved_at: float | None = None
    generation: int = 0  # bumped whenever Alertmanager must hear about a change
    delivered: int = -1  # generation last accepted by an Alertmanager


@dataclass(frozen=True)
class _Pending:
    alert: dict[str, Any]
    key: tuple[str, str, str] | None  # None: a superseded label set, resolved once
    generation: int
    resolved: bool


class AlertPusher:
    """Keep the active detections and push them to every configured Alertmanager.

    ``observe`` (main loop) and ``push`` (pusher thread) may run concurrently;
    pushes themselves are serialised. HTTP happens outside the state lock, so
    ``observe`` never waits for a slow Alertmanager.
    """

    def __init__(
        self,
        cfg: AlertmanagerConfig,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        external_url: str = "",
        max_active: int = DEFAULT_MAX_ACTIVE,
    ) -> None:
        self._cfg = cfg
        self._urls = tuple(u.rstrip("/") for u in cfg.urls)
        self._sessions = {
            u: session if session is not None else requests.Session() for u in self._urls
        }
        self._clock = clock
        self._external_url = external_url
        self._max_active = max(1, max_active)
        self._lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._active: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._superseded: list[_Pending] = []
        self._last_ok_at: float | None = None
        self._consecutive_failures = 0
        self._next_retry_at: float | None = None
        self._evicted_since_push = 0
        self.evicted_total = 0
        self.failures_by_url: dict[str, int] = {redact_url(u): 0 for u in self._urls}

    def __repr__(self) -> str:
        return f"AlertPusher(urls={[redact_url(u) for u in self._urls]!r})"

    # ---------------------------------------------------------------- state

    def active_count(self) -> int:
        """Detections currently held (active, or resolved and not yet delivered)."""
        with self._lock:
            return len(self._active)

    def active_by_detector(self) -> dict[str, int]:
        """Count active (not resolved) detections per detector, for a gauge in the daemon."""
        counts: dict[str, int] = {}
        with self._lock:
            for entry in self._active.values():
                if entry.resolved_at is None:
                    name = entry.detection.detector
                    counts[name] = counts.get(name, 0) + 1
        return counts

    def observe(self, detections: Iterable[Detection], now: float | None = None) -> int:
        """Record one window's detections as seen at ``now``; return how many were evicted."""
        now = self._clock() if now is None else now
        evicted = 0
        with self._lock:
            for det in detections:
                self._observe_one(det, now)
            self._resolve_stale(now)
            while len(self._active) > self._max_active:
                self._active.popitem(last=False)
                evicted += 1
            self._evicted_since_push += evicted
            self.evicted_total += evicted
        if evicted:
            log.warning(
                "Alert active set full (%d): evicted %d least recently seen detection(s); "
                "Alertmanager resolves them when their endsAt passes",
                self._max_active,
                evicted,
            )
        return evicted

    def _observe_one(self, det: Detection, now: float) -> None:
        entry = self._active.get(det.key)
        if entry is None:
            self._active[det.key] = _Entry(
                det, det.severity, build_labels(det, det.severity), first_seen=now, last_seen=now
            )
            return
        self._active.move_to_end(det.key)
        entry.detection = det
        entry.last_seen = max(entry.last_seen, now)
        if entry.resolved_at is not None:
            entry.resolved_at = None  # back before the resolution went out
            entry.generation += 1
        if SEVERITY_RANK.get(det.severity, -1) > SEVERITY_RANK.get(entry.severity, -1):
            # A new severity is a new label set for Alertmanager: end the old one.
            if entry.delivered >= 0:
                old = self._alert(entry, now, resolved=True)
                self._superseded.append(_Pending(old, None, 0, True))
                del self._superseded[: -self._max_active]
            entry.severity = det.severity
            entry.labels = build_labels(det, det.severity)
            entry.generation += 1

    def _resolve_stale(self, now: float) -> None:
        limit = self._cfg.resolve_after_seconds
        stale = [
            key
            for key, entry in self._active.items()
            if entry.resolved_at is None and now - entry.last_seen >= limit
        ]
        for key in stale:
            if not self._urls:
                del self._active[key]  # nobody to tell: just forget it
                continue
            entry = self._active[key]
            entry.resolved_at = now
            entry.generation += 1

    def due(self, now: float | None = None) -> bool:
        """Say whether :meth:`push` has something to send now."""
        now = self._clock() if now is None else now
        if not self._urls:
            return False
        with self._lock:
            self._resolve_stale(now)
            if self._next_retry_at is not None and now < self._next_retry_at:
                return False
            if self._superseded:
                return True
            if any(e.generation != e.delivered for e in self._active.values()):
                return True
            if not self._active:
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

    def _snapshot(self, now: float) -> tuple[list[_Pending], int, int]:
        with self._lock:
            self._resolve_stale(now)
            pending = list(self._superseded)
            self._superseded = []
            entries = sorted(
                self._active.items(), key=lambda kv: (kv[1].resolved_at is None, kv[1].first_seen)
            )
            for key, entry in entries:
                resolved = entry.resolved_at is not None
                pending.append(
                    _Pending(self._alert(entry, now, resolved), key, entry.generation, resolved)
                )
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
                    entry = self._active.get(p.key)
                    if not ok or entry is None or entry.generation != p.generation:
                        continue
                    entry.delivered = p.generation
                    if p.resolved:
                        del self._active[p.key]
            del self._superseded[: -self._max_active]
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

    def _alert(self, entry: _Entry, now: float, resolved: bool) -> dict[str, Any]:
        if resolved:
            ends = max(now, entry.first_seen)
        else:
            # Far enough ahead that the next resend (even a retried one) arrives first.
            ends = now + max(self._cfg.resolve_after_seconds, 2 * self._cfg.resend_interval_seconds)
        alert: dict[str, Any] = {
            "labels": dict(entry.labels),
            "annotations": build_annotations(entry.detection, entry.first_seen, entry.last_seen),
            "startsAt": rfc3339(entry.first_seen),
            "endsAt": rfc3339(ends),
        }
        if self._external_url:
            alert["generatorURL"] = self._external_url
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


def build_labels(det: Detection, severity: str) -> dict[str, str]:
    """Return the alert's identifying labels (empty values left out, as Alertmanager does)."""
    labels = {
        "alertname": alertname(det.detector),
        "detector": cap_label(det.detector, 48),
        "severity": cap_label(severity, 16),
        "source": cap_label(det.source),
        "target": cap_label(det.target),
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


def build_annotations(det: Detection, first_seen: float, last_seen: float) -> dict[str, str]:
    """Return the human details: summary, description, evidence and times."""
    summary = det.summary or f"{det.detector} from {det.source or '?'} to {det.target or '?'}"
    window = f"{rfc3339(det.window_start)} to {rfc3339(det.window_end)}"
    description = (
        f"{det.detector} ({det.severity}) from {det.source or '?'} to "
        f"{det.target or '?'} in window {window}."
    )
    evidence = _evidence_text(det.evidence)
    if evidence:
        description += f" Evidence: {evidence}."
    annotations = {
        "summary": summary,
        "description": description,
        "evidence": json.dumps(
            {str(k): v for k, v in det.evidence.items()}, sort_keys=True, default=str
        ),
        "window_start": rfc3339(det.window_start),
        "window_end": rfc3339(det.window_end),
        "first_seen": rfc3339(first_seen),
        "last_seen": rfc3339(last_seen),
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
