"""Findings become incidents: one per (detector, source, target), however many windows it lasts.

A scan that goes on for ten minutes is found in ten windows; an on-call engineer wants
one alert that says when it started, when it was last seen, in how many windows and
how strong it got, and that resolves once it is over. This module decides that, and
nothing else: no clock, no threads, no I/O. The daemon hands it each pushed window's
findings and the wall-clock time; :class:`~.alerting.AlertPusher` turns incidents into
Alertmanager alerts.

Per window, before incidents (:func:`triage_window`, pure):

1. allow-lists set aside what the site declared ordinary (:mod:`.suppression`);
2. at most ``alerting.max_findings_per_detector`` findings per detector are kept
   (:func:`cap_findings`): those of incidents already open first, then the most
   severe and strongest; the rest become one summary finding (source and target
   ``others``), so 400 spoofed sources are one finding, not 400 alerts;
3. a window that ended more than ``alerting.max_window_age_seconds`` ago (a replay,
   a backfill, a backlog) is reported but not pushed.

Life of an incident (:class:`IncidentBook`):

* **opened** by the first pushed window with a finding of its key;
* **continued** by every later one: ``last_window_end``, ``windows``, the latest and
  the peak finding (largest :data:`PEAK_EVIDENCE` value) are updated; a higher
  severity is kept (it changes the alert's labels, see alerting), a lower one is not;
* **resolved** when ``resolve_after_windows`` pushed windows in a row did not have it,
  or, when no windows close at all (captures stopped), ``resolve_after_seconds`` of
  wall-clock time after it was last seen;
* **reopened** if seen again before its resolution was delivered; once delivered the
  incident is forgotten and a later finding opens a new one.

The book holds at most ``max_incidents``; beyond, resolved incidents are forgotten
first (oldest resolution first), then the least recently seen active ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .detection import MODEL_PEAK_EVIDENCE, SEVERITY_RANK, Detection
from .detectors import REGISTRY
from .suppression import Suppressed, SuppressionRules, suppress

Key = tuple[str, str, str]  # Detection.key: (detector, source, target)

#: The evidence that says how strong a finding is, per detector (each registered
#: detector's ``DetectorSpec.peak_evidence``, then the models'): an incident's peak is its
#: finding with the largest value. Detectors not listed compare equal (latest wins).
PEAK_EVIDENCE: dict[str, str] = {
    **{name: spec.peak_evidence for name, spec in REGISTRY.items()},
    **MODEL_PEAK_EVIDENCE,
}
#: Source and target of the summary finding that stands for the findings beyond the cap.
SUMMARY_ENDPOINT = "others"
#: Suppressed findings listed in full in a window report (all are counted).
MAX_SUPPRESSED_LISTED = 50


def magnitude(det: Detection) -> float:
    """Return the finding's strength (its :data:`PEAK_EVIDENCE` value), 0 when unknown."""
    value = det.evidence.get(PEAK_EVIDENCE.get(det.detector, ""))
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return 0.0


# ------------------------------------------------------------------------------ per window


def cap_findings(
    detections: Iterable[Detection], limit: int, sticky: Collection[Key] = frozenset()
) -> tuple[list[Detection], int]:
    """Keep at most ``limit`` findings per detector; fold the rest into one summary finding.

    Findings whose key is in ``sticky`` (incidents already open) are kept first, so an
    ongoing incident does not flap in and out of the cap; then the most severe, then the
    strongest, then the first. Return the findings (detectors in order of first
    appearance, each one's kept findings in their original order, its summary last) and
    how many were folded.
    """
    groups: dict[str, list[tuple[int, Detection]]] = {}
    for i, det in enumerate(detections):
        groups.setdefault(det.detector, []).append((i, det))
    out: list[Detection] = []
    folded = 0
    for group in groups.values():
        if len(group) <= limit:
            out.extend(det for _, det in group)
            continue
        ranked = sorted(
            group,
            key=lambda item: (
                item[1].key not in sticky,
                -SEVERITY_RANK.get(item[1].severity, -1),
                -magnitude(item[1]),
                item[0],
            ),
        )
        out.extend(det for _, det in sorted(ranked[:limit], key=lambda item: item[0]))
        rest = [det for _, det in ranked[limit:]]
        out.append(summary_finding(rest, limit))
        folded += len(rest)
    return out, folded


def summary_finding(rest: list[Detection], listed: int) -> Detection:
    """Return the one finding that stands for ``rest`` (same detector), naming no address."""
    first = rest[0]
    sources = len({d.source for d in rest})
    targets = len({d.target for d in rest})
    severity = max((d.severity for d in rest), key=lambda s: SEVERITY_RANK.get(s, -1))
    return Detection(
        detector=first.detector,
        severity=severity,
        source=SUMMARY_ENDPOINT,
        target=SUMMARY_ENDPOINT,
        window_start=min(d.window_start for d in rest),
        window_end=max(d.window_end for d in rest),
        evidence={
            "more_findings": len(rest),
            "sources": sources,
            "targets": targets,
            "listed": listed,
            "peak": max(magnitude(d) for d in rest),
        },
        summary=(
            f"{len(rest)} more {first.detector} findings from {sources} sources to "
            f"{targets} targets (beyond the {listed} listed)"
        ),
    )


@dataclass(frozen=True)
class WindowTriage:
    """What one window's detections become on their way to Alertmanager.

    ``findings`` are what the report lists and, when ``held_back`` is empty, what is
    pushed; ``suppressed`` what the allow-lists set aside; ``folded`` how many findings
    the cap folded into summary findings; ``held_back`` why the window is not pushed
    ("" when it is).
    """

    findings: list[Detection]
    suppressed: list[Suppressed]
    folded: int
    held_back: str = ""

    @property
    def pushed(self) -> bool:
        return not self.held_back

    def suppressed_counts(self) -> dict[tuple[str, str], int]:
        """Count suppressed findings by (detector, reason), for the metric."""
        counts: dict[tuple[str, str], int] = {}
        for s in self.suppressed:
            k = (s.detection.detector, s.reason)
            counts[k] = counts.get(k, 0) + 1
        return counts

    def report_fields(self) -> dict[str, Any]:
        """Return what the window report says about suppression and alerting (JSON-ready)."""
        by_detector: dict[str, dict[str, int]] = {}
        for (detector, reason), n in sorted(self.suppressed_counts().items()):
            by_detector.setdefault(detector, {})[reason] = n
        return {
            "suppressed": {
                "count": len(self.suppressed),
                "by_detector": by_detector,
                "listed": [s.to_dict() for s in self.suppressed[:MAX_SUPPRESSED_LISTED]],
            },
            "alerting": {
                "pushed": self.pushed,
                "held_back_reason": self.held_back,
                "findings_folded": self.folded,
            },
        }


def replay_reason(window_end: float, now: float, max_age_seconds: float) -> str:
    """Return why a window is too old to page for ("" when it is not; 0 disables the check)."""
    if max_age_seconds <= 0:
        return ""
    age = now - window_end
    if age <= max_age_seconds:
        return ""
    return (
        f"window ended {age:.0f} s ago, more than alerting.max_window_age_seconds "
        f"({max_age_seconds:g} s): a replayed or backfilled capture, or a backlog; "
        "reported but not pushed to Alertmanager"
    )


def triage_window(
    detections: Iterable[Detection],
    rules: SuppressionRules,
    *,
    window_end: float,
    now: float,
    max_findings_per_detector: int,
    max_window_age_seconds: float,
    sticky: Collection[Key] = frozenset(),
) -> WindowTriage:
    """Apply allow-lists, the per-detector cap and the replay age to one window (pure)."""
    kept, suppressed = suppress(detections, rules)
    findings, folded = cap_findings(kept, max_findings_per_detector, sticky)
    return WindowTriage(
        findings, suppressed, folded, replay_reason(window_end, now, max_window_age_seconds)
    )


# ------------------------------------------------------------------------------ incidents


@dataclass
class Incident:
    """One finding over its life. Window times are data time; ``*_at`` are wall-clock times."""

    key: Key
    latest: Detection
    peak: Detection
    severity: str  # the highest seen: part of the alert's identity
    first_window_start: float
    last_window_end: float
    opened_at: float  # when first observed: the alert's startsAt
    seen_at: float  # when last observed
    windows: int = 1
    quiet_windows: int = 0  # pushed windows since it was last seen
    resolved_at: float | None = None
    version: int = 0  # bumped whenever Alertmanager must hear of it at once

    @property
    def active(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True)
class IncidentPolicy:
    resolve_after_windows: int = 3
    resolve_after_seconds: float = 300.0
    max_incidents: int = 10_000


@dataclass(frozen=True)
class Escalation:
    """An incident whose severity rose: its alert under ``previous`` severity must end."""

    incident: Incident
    previous: str


@dataclass(frozen=True)
class Observed:
    """What one window did to the book."""

    opened: list[Incident] = field(default_factory=list)
    escalated: list[Escalation] = field(default_factory=list)
    resolved: list[Incident] = field(default_factory=list)
    evicted: int = 0


class IncidentBook:
    """The incidents, kept least recently seen first; a pure state machine."""

    def __init__(self, policy: IncidentPolicy | None = None) -> None:
        self.policy = policy or IncidentPolicy()
        self._incidents: OrderedDict[Key, Incident] = OrderedDict()

    def __len__(self) -> int:
        return len(self._incidents)

    def __iter__(self) -> Iterator[Incident]:
        return iter(list(self._incidents.values()))

    def get(self, key: Key) -> Incident | None:
        return self._incidents.get(key)

    def active_keys(self) -> frozenset[Key]:
        return frozenset(k for k, i in self._incidents.items() if i.active)

    def active_by_detector(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inc in self._incidents.values():
            if inc.active:
                counts[inc.latest.detector] = counts.get(inc.latest.detector, 0) + 1
        return counts

    def observe(self, findings: Iterable[Detection], now: float) -> Observed:
        """Take one pushed window's findings, seen at wall-clock ``now``."""
        out = Observed()
        seen: set[Key] = set()
        for det in findings:
            self._observe_one(det, now, det.key in seen, out)
            seen.add(det.key)
        for inc in self._incidents.values():
            if inc.key in seen or not inc.active:
                continue
            inc.quiet_windows += 1
            if inc.quiet_windows >= self.policy.resolve_after_windows:
                self._resolve(inc, now)
                out.resolved.append(inc)
        return Observed(out.opened, out.escalated, out.resolved, self._bound())

    def _observe_one(self, det: Detection, now: float, again: bool, out: Observed) -> None:
        inc = self._incidents.get(det.key)
        if inc is None:
            inc = Incident(
                det.key,
                det,
                det,
                det.severity,
                det.window_start,
                det.window_end,
                opened_at=now,
                seen_at=now,
            )
            self._incidents[det.key] = inc
            out.opened.append(inc)
            return
        self._incidents.move_to_end(det.key)
        if not again:  # the same key twice in one window is one window
            inc.windows += 1
        inc.latest = det
        inc.seen_at = max(inc.seen_at, now)
        inc.quiet_windows = 0
        inc.first_window_start = min(inc.first_window_start, det.window_start)
        inc.last_window_end = max(inc.last_window_end, det.window_end)
        if magnitude(det) >= magnitude(inc.peak):
            inc.peak = det
        if not inc.active:  # seen again before its resolution was delivered
            inc.resolved_at = None
            inc.version += 1
        if SEVERITY_RANK.get(det.severity, -1) > SEVERITY_RANK.get(inc.severity, -1):
            out.escalated.append(Escalation(inc, inc.severity))
            inc.severity = det.severity
            inc.version += 1

    def _resolve(self, inc: Incident, now: float) -> None:
        inc.resolved_at = now
        inc.version += 1

    def expire(self, now: float) -> list[Incident]:
        """Resolve active incidents not observed for ``resolve_after_seconds`` of wall time."""
        limit = self.policy.resolve_after_seconds
        stale = [i for i in self._incidents.values() if i.active and now - i.seen_at >= limit]
        for inc in stale:
            self._resolve(inc, now)
        return stale

    def forget(self, key: Key, version: int | None = None) -> bool:
        """Drop a resolved incident (its resolution delivered, or nobody to tell).

        With ``version``, only if the incident did not change since that version.
        """
        inc = self._incidents.get(key)
        if inc is None or inc.active or (version is not None and inc.version != version):
            return False
        del self._incidents[key]
        return True

    def _bound(self) -> int:
        excess = len(self._incidents) - self.policy.max_incidents
        if excess <= 0:
            return 0
        resolved = sorted(
            (i for i in self._incidents.values() if not i.active),
            key=lambda i: i.resolved_at or 0.0,
        )
        victims = [i.key for i in resolved[:excess]]
        if len(victims) < excess:
            active = (k for k, i in self._incidents.items() if i.active)
            victims.extend(k for _, k in zip(range(excess - len(victims)), active, strict=False))
        for key in victims:
            del self._incidents[key]
        return len(victims)
