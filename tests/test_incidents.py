"""Incidents: windows in, incident changes out (tables), caps with a summary finding, replay age."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from netmon_exporter.detection import MODEL_KINDS, Detection
from netmon_exporter.detectors import REGISTRY
from netmon_exporter.incidents import (
    MAX_SUPPRESSED_LISTED,
    PEAK_EVIDENCE,
    SUMMARY_ENDPOINT,
    IncidentBook,
    IncidentPolicy,
    cap_findings,
    magnitude,
    replay_reason,
    triage_window,
)
from netmon_exporter.suppression import IgnoreRules, SuppressionRules

W = 60.0  # window length
T0 = 1_800_000_000.0


def finding(
    source: str = "203.0.113.9",
    target: str = "10.0.0.1",
    detector: str = "port_scan",
    severity: str = "warning",
    window: int = 0,
    strength: int = 20,
) -> Detection:
    return Detection(
        detector,
        severity,
        source,
        target,
        T0 + window * W,
        T0 + (window + 1) * W,
        {"distinct_ports": strength},
        f"{source} probed {strength} ports on {target}",
    )


@dataclass(frozen=True)
class Step:
    """One pushed window: its findings (source letters) and what the book should say."""

    sources: str  # one letter per finding, e.g. "ab"
    opened: str = ""
    resolved: str = ""
    active: str = ""  # active incidents after the window
    severity: str = "warning"
    wall_gap: float = W  # wall-clock seconds since the previous window


@dataclass(frozen=True)
class Table:
    name: str
    steps: list[Step]
    policy: IncidentPolicy = field(default_factory=IncidentPolicy)


TABLES = [
    Table(
        "a scan over five windows is one incident; it resolves three quiet windows later",
        [
            Step("a", opened="a", active="a"),
            Step("a", active="a"),
            Step("a", active="a"),
            Step("a", active="a"),
            Step("a", active="a"),
            Step("", active="a"),
            Step("", active="a"),
            Step("", resolved="a"),
            Step(""),
        ],
    ),
    Table(
        "a gap shorter than resolve_after_windows does not split the incident",
        [
            Step("a", opened="a", active="a"),
            Step("", active="a"),
            Step("", active="a"),
            Step("a", active="a"),
        ],
    ),
    Table(
        "two attackers, one stops",
        [
            Step("ab", opened="ab", active="ab"),
            Step("b", active="ab"),
            Step("b", resolved="a", active="b"),
        ],
        IncidentPolicy(resolve_after_windows=2),
    ),
    Table(
        "windows stop closing: the wall clock resolves it",
        [
            Step("a", opened="a", active="a"),
            Step("", active="a", wall_gap=10),
            Step("", resolved="a", wall_gap=400),
        ],
        IncidentPolicy(resolve_after_windows=10, resolve_after_seconds=300),
    ),
    Table(
        "the same key twice in one window counts once",
        [
            Step("aa", opened="a", active="a"),
        ],
    ),
]


@pytest.mark.parametrize("table", TABLES, ids=[t.name for t in TABLES])
def test_incident_life_cycle(table: Table) -> None:
    book = IncidentBook(table.policy)
    now = T0
    for i, step in enumerate(table.steps):
        now += step.wall_gap
        observed = book.observe(
            [finding(source=s, window=i, severity=step.severity) for s in step.sources], now
        )
        resolved = [inc.key[1] for inc in observed.resolved]
        resolved += [inc.key[1] for inc in book.expire(now)]
        assert "".join(inc.key[1] for inc in observed.opened) == step.opened, (i, step)
        assert "".join(sorted(resolved)) == step.resolved, (i, step)
        assert "".join(sorted(k[1] for k in book.active_keys())) == step.active, (i, step)
        for inc in book:
            if not inc.active:
                book.forget(inc.key, inc.version)  # as the pusher does once delivered


def test_incident_keeps_first_last_windows_peak_and_highest_severity() -> None:
    book = IncidentBook()
    book.observe([finding(window=0, strength=20)], T0 + 60)
    book.observe([finding(window=1, strength=90)], T0 + 120)
    observed = book.observe([finding(window=2, strength=30, severity="critical")], T0 + 180)
    (inc,) = list(book)
    assert (inc.first_window_start, inc.last_window_end, inc.windows) == (T0, T0 + 3 * W, 3)
    assert inc.peak.evidence["distinct_ports"] == 90 and inc.latest.evidence["distinct_ports"] == 30
    assert (inc.opened_at, inc.seen_at) == (T0 + 60, T0 + 180)
    assert inc.severity == "critical"
    assert [(e.incident.key, e.previous) for e in observed.escalated] == [(inc.key, "warning")]
    book.observe([finding(window=3, severity="warning")], T0 + 240)
    assert inc.severity == "critical"  # never back down: no flapping label sets


def test_reopened_before_its_resolution_was_delivered() -> None:
    book = IncidentBook(IncidentPolicy(resolve_after_windows=1))
    book.observe([finding()], T0)
    (resolved,) = book.observe([], T0 + 60).resolved
    version = resolved.version
    book.observe([finding(window=2)], T0 + 120)
    assert resolved.active and resolved.version > version
    assert not book.forget(resolved.key, version)  # a late delivery of the old resolution
    assert len(book) == 1


def test_book_is_bounded_resolved_forgotten_first_then_least_recently_seen() -> None:
    book = IncidentBook(IncidentPolicy(resolve_after_windows=1, max_incidents=3))
    book.observe([finding("a"), finding("b")], T0)
    book.observe([finding("c")], T0 + 60)  # a and b resolve (not yet delivered)
    observed = book.observe([finding("c"), finding("d"), finding("e")], T0 + 120)
    assert observed.evicted == 2
    assert sorted(k[1] for k in book.active_keys()) == ["c", "d", "e"]
    observed = book.observe([finding("f")], T0 + 180)  # c, d, e now resolve; f opens
    assert observed.evicted == 1 and len(book) == 3
    assert "f" in {k[1] for k in book.active_keys()}


# ------------------------------------------------------------------ caps


def test_cap_keeps_the_strongest_and_folds_the_rest_into_one_summary() -> None:
    flood = [finding(f"198.51.100.{i}", strength=i) for i in range(1, 413)]
    other = [finding("10.0.0.7", "10.0.0.8", detector="brute_force")]
    out, folded = cap_findings([*flood, *other], 10)
    assert folded == 402
    scans = [d for d in out if d.detector == "port_scan"]
    assert len(scans) == 11
    summary = scans[-1]
    assert (summary.source, summary.target) == (SUMMARY_ENDPOINT, SUMMARY_ENDPOINT)
    assert summary.evidence["more_findings"] == 402 and summary.evidence["sources"] == 402
    assert summary.summary.startswith("402 more port_scan findings from 402 sources")
    assert "198.51.100" not in summary.summary  # names no address
    assert sorted(d.evidence["distinct_ports"] for d in scans[:-1]) == list(range(403, 413))
    assert [d.detector for d in out][-1] == "brute_force"  # other detectors untouched


def test_cap_prefers_open_incidents_then_severity() -> None:
    found = [finding(f"10.9.0.{i}", strength=100 + i) for i in range(5)]
    found.append(finding("10.9.9.9", strength=1))
    found.append(finding("10.9.9.8", strength=1, severity="critical"))
    sticky = {found[5].key}
    out, folded = cap_findings(found, 2, sticky)
    assert folded == 5
    assert [d.source for d in out[:2]] == ["10.9.9.9", "10.9.9.8"]
    assert out[2].severity == "warning" and out[2].source == SUMMARY_ENDPOINT


def test_cap_summary_is_a_stable_incident_across_windows() -> None:
    book = IncidentBook()
    for w in range(3):
        spoofed = [finding(f"198.51.{w}.{i}", window=w) for i in range(50)]
        out, _ = cap_findings(spoofed, 5, book.active_keys())
        book.observe(out, T0 + w * W)
    summaries = [i for i in book if i.key[1] == SUMMARY_ENDPOINT]
    assert len(summaries) == 1 and summaries[0].windows == 3


def test_peak_evidence_comes_from_each_detector_spec_and_every_model_kind() -> None:
    assert list(PEAK_EVIDENCE) == [*REGISTRY, *MODEL_KINDS]
    for name, spec in REGISTRY.items():
        assert PEAK_EVIDENCE[name] == spec.peak_evidence in spec.evidence, name


def test_magnitude_of_unknown_detector_or_odd_evidence_is_zero() -> None:
    assert magnitude(finding(detector="new_thing")) == 0.0
    odd = Detection("port_scan", "warning", "a", "b", 0, 1, {"distinct_ports": "many"})
    assert magnitude(odd) == 0.0


# ------------------------------------------------------------------ replays and triage


@pytest.mark.parametrize(
    ("age", "max_age", "held"),
    [
        (0, 600, False),
        (600, 600, False),
        (601, 600, True),
        (86400 * 400, 600, True),
        (1e9, 0, False),
    ],
)
def test_replay_age(age: float, max_age: float, held: bool) -> None:
    reason = replay_reason(T0 - age, T0, max_age)
    assert bool(reason) is held
    if held:
        assert "alerting.max_window_age_seconds" in reason


def test_triage_window_suppresses_caps_and_holds_back_old_windows() -> None:
    poller = "10.0.5.10"
    beacon_rules = IgnoreRules(sources=(ipaddress.ip_network(poller),))
    rules = SuppressionRules(by_detector={"beacon": beacon_rules})
    found = [finding(poller, f"10.1.0.{i}:161", detector="beacon") for i in range(80)]
    found += [finding(f"198.51.100.{i}") for i in range(30)]
    triage = triage_window(
        found,
        rules,
        window_end=T0,
        now=T0 + 90,
        max_findings_per_detector=10,
        max_window_age_seconds=600,
    )
    assert triage.pushed and triage.folded == 20
    assert len(triage.findings) == 11 and len(triage.suppressed) == 80
    assert triage.suppressed_counts() == {("beacon", "source"): 80}
    fields = triage.report_fields()
    assert fields["suppressed"]["count"] == 80
    assert fields["suppressed"]["by_detector"] == {"beacon": {"source": 80}}
    assert len(fields["suppressed"]["listed"]) == MAX_SUPPRESSED_LISTED
    assert fields["alerting"] == {"pushed": True, "held_back_reason": "", "findings_folded": 20}

    old = triage_window(
        found,
        rules,
        window_end=T0 - 3600,
        now=T0,
        max_findings_per_detector=10,
        max_window_age_seconds=600,
    )
    assert not old.pushed and "3600 s ago" in old.held_back
    assert len(old.findings) == 11  # still reported
    assert old.report_fields()["alerting"]["pushed"] is False
