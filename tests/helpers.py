"""Small helpers shared by several test files."""

from __future__ import annotations

from pathlib import Path

from netmon_exporter.config import DetectorsConfig
from netmon_exporter.flow_schema import FlowBatch, make_batch, str_to_addrs
from netmon_exporter.tools.evaluate import analyse_capture, matches
from netmon_exporter.tools.evaluate_suites import found, run_cases
from netmon_exporter.tools.suites import cases


def column(rows: list[dict], key: str) -> list:
    """One field of every row dict."""
    return [r[key] for r in rows]


def rows_batch(rows: list[dict], last_ts: list, **columns) -> FlowBatch:
    """A batch from row dicts with "src", "dst", "sport", "dport", "proto" and "ts"; other columns as given."""
    return make_batch(
        len(rows),
        src_ip=str_to_addrs(column(rows, "src")),
        dst_ip=str_to_addrs(column(rows, "dst")),
        src_port=column(rows, "sport"),
        dst_port=column(rows, "dport"),
        protocol=column(rows, "proto"),
        first_ts=column(rows, "ts"),
        last_ts=last_ts,
        **columns,
    )


def hard_case_found(tmp_path: Path, name: str):
    """Run the "hard" suite's case `name` on the default detectors; assert it is found; return the result."""
    (c,) = [c for c in cases("hard") if c.name == name]
    (r,) = run_cases([c], [1], tmp_path, DetectorsConfig(), analyse_capture)
    assert found(r, matches), [(d.detector, d.source, d.target) for d in r.detections]
    return r
