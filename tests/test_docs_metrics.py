"""docs/metrics.md against a real scrape: the same metric families, the same labels.

docs/metrics.md is generated from metrics.py (tests/test_config.py checks it is up to
date); this checks the generator tells the truth about what the daemon really exposes.
The daemon runs with a model loaded and windows closed, so the metrics that have no
series until then (model info, top talkers) have them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netmon_exporter.metrics import OPEN_LABELS

from .integration.daemon_process import DaemonProcess
from .integration.test_ingest_daemon import age, flows_records, pcap_header

ROOT = Path(__file__).resolve().parents[1]
STANDARD = ("process_", "python_")  # documented in one sentence, not row by row
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<type>\w+) \| (?P<labels>[^|]*) \|")
T = 1_790_000_040.0


def documented() -> dict[str, tuple[str, set[str]]]:
    """Metric name as exposed -> (type, label names), from the table of docs/metrics.md."""
    out = {}
    for line in (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            out[m["name"]] = (m["type"], set(re.findall(r"`(\w+)`", m["labels"])))
    return out


def scraped(body: str) -> dict[str, tuple[str, set[str] | None]]:
    """Metric name as exposed -> (type, label names; None when it has no series)."""
    out: dict[str, tuple[str, set[str] | None]] = {}
    for fam in text_string_to_metric_families(body):
        if fam.name.startswith(STANDARD):
            continue
        name = fam.name + {"counter": "_total"}.get(fam.type, "")
        labels = {k for s in fam.samples for k in s.labels if k not in ("le", "quantile")}
        out[name] = (fam.type, labels if fam.samples else None)
    return out


@pytest.mark.integration
def test_metric_reference_matches_a_real_scrape(tmp_path: Path) -> None:
    """Guards docs/metrics.md: "A test checks this table against a real scrape of the daemon: the same families, the same labels"."""
    from netmon_exporter.cli import main

    model = tmp_path / "state" / "models" / "anomaly.skops"
    baseline = ROOT / "samples" / "dns-edns-ecs.pcap"
    assert main(["train", "--baseline", str(baseline), "-o", str(model), "--trees", "5"]) == 0
    (tmp_path / "captures").mkdir()
    (tmp_path / "config.yaml").write_text(
        "capture:\n  directory: captures\n  min_age_seconds: 0\n"
        "output:\n  directory: out\nstate:\n  directory: state\n"
        "models:\n  anomaly_path: models/anomaly.skops\n"
    )
    capture = tmp_path / "captures" / "a.pcap"
    capture.write_bytes(pcap_header() + b"".join(flows_records(T + 60 * m, m) for m in range(4)))
    age(capture)
    d = DaemonProcess(tmp_path / "config.yaml").start()
    try:
        d.wait_for(lambda: (d.metric("netmon_windows_processed_total") or 0) >= 2, 60, "windows")
        d.wait_for(
            lambda: (d.metric("netmon_top_talker_bytes", {"rank": "1"}) or 0) > 0, 30, "talkers"
        )
        _, body = d.get("/metrics")
    finally:
        d.stop()

    doc, live = documented(), scraped(body)
    assert set(doc) == set(live), (
        f"in docs/metrics.md only: {sorted(set(doc) - set(live))}; "
        f"in the scrape only: {sorted(set(live) - set(doc))}"
    )
    for name, (kind, labels) in live.items():
        # an info metric is a gauge of value 1 in the text format (OpenMetrics says info)
        assert {"info": "gauge"}.get(doc[name][0], doc[name][0]) == kind, (
            f"{name}: documented as {doc[name][0]}, exposed as {kind}"
        )
        assert labels is not None, f"{name} has no series in this scrape: the check is blind"
        assert labels == doc[name][1], f"{name}: documented labels {doc[name][1]}, real {labels}"
    # the metrics the doc lists as not pre-initialised are real names
    shorts = {n.removesuffix("_total") for n in doc}
    shorts |= {n.removesuffix("_info") for n, (kind, _) in doc.items() if kind == "info"}
    assert {f"netmon_{short}" for short in OPEN_LABELS} <= shorts


def test_labelled_metrics_are_pre_initialised_unless_the_doc_says_otherwise() -> None:
    """Guards docs/metrics.md: "every series of those sets exists from start-up with the value 0".

    Each labelled metric of the catalogue has its series from the moment it is
    built, or is one of those the doc lists with what bounds them (OPEN_LABELS).
    """
    from netmon_exporter.tools.reference_docs import metric_catalogue

    families = {f.name: f for f in _fresh_registry().collect()}
    for doc in metric_catalogue():
        if not doc.labels or doc.short in OPEN_LABELS:
            continue
        family = families[f"netmon_{doc.short}"]
        assert family.samples, f"{doc.name} has labels {doc.labels} but no series at start-up"


def _fresh_registry():  # noqa: ANN202
    from prometheus_client import CollectorRegistry

    from netmon_exporter.metrics import build_metrics

    registry = CollectorRegistry()
    build_metrics(registry)
    return registry
