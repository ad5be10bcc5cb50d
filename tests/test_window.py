"""Window assignment, watermark closing, late flows, reports and pruning."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from netmon_exporter.analysis import WindowAnalysis
from netmon_exporter.config import WindowsConfig
from netmon_exporter.detection import Detection
from netmon_exporter.flow_schema import FlowBatch, is_flow, make_batch, str_to_addrs
from netmon_exporter.window import WindowAggregator

from .test_flow_table import _PROP, _SET, _build, _packet, write

BASE = 1_700_000_040.0  # multiple of 60


def batch(
    ts: list[float], src: str = "10.0.0.1", proto: int = 6, fwd_bytes: float = 100, dur: float = 1.0
) -> FlowBatch:
    n = len(ts)
    features: dict[str, list[float]] = {
        "Tot Fwd Pkts": [2] * n,
        "Tot Bwd Pkts": [1] * n,
        "TotLen Fwd Pkts": [fwd_bytes] * n,
        "TotLen Bwd Pkts": [50] * n,
        # on the wire: a 54-byte Ethernet + IPv4 + TCP header per packet besides the payload
        "fwd_wire_bytes": [fwd_bytes + 2 * 54] * n,
        "bwd_wire_bytes": [50 + 54] * n,
    }
    return make_batch(
        n,
        src_ip=str_to_addrs([src] * n),
        dst_ip=str_to_addrs(["10.0.0.2"] * n),
        protocol=[proto] * n,
        first_ts=ts,
        last_ts=[t + dur for t in ts],
        **features,
    )


def empty_analysis(**kw) -> WindowAnalysis:
    args = {
        "detections": [],
        "class_counts": {},
        "anomaly_scores": np.zeros(0),
        "flows_analysed": 0,
        "seconds": 0.01,
    }
    return WindowAnalysis(**{**args, **kw})


def test_windows_align_to_wall_clock_and_close_after_grace(tmp_path):
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path)
    assert agg.add(batch([BASE + 5, BASE + 59, BASE + 61])) == []
    # watermark = latest packet - 60 s; window [BASE, BASE+60) closes once it passes BASE+60
    assert agg.add(batch([BASE + 100])) == []
    (w,) = agg.add(batch([BASE + 125]))
    assert (w.start, w.end, len(w.flows)) == (BASE, BASE + 60, 2)
    rest = agg.flush()
    assert [(x.start, len(x.flows)) for x in rest] == [(BASE + 60, 2), (BASE + 120, 1)]
    assert agg.open_windows() == 0


def test_late_flows_go_to_oldest_open_window_and_are_counted(tmp_path):
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path)
    agg.add(batch([BASE + 1]))
    (w0,) = agg.add(batch([BASE + 200]))
    assert w0.start == BASE
    closed = agg.add(batch([BASE + 2, BASE + 3]))  # window BASE already closed
    assert closed == []  # they wait in the window holding the watermark, still open
    closed = agg.flush()
    late = [w for w in closed if w.late_flows]
    assert late and late[0].start == BASE + 120 and late[0].late_flows == 2
    assert sum(len(w.flows) for w in closed) == 3


def test_no_flow_lost_or_duplicated(tmp_path):
    rng = np.random.default_rng(0)
    agg = WindowAggregator(WindowsConfig(length_seconds=10), tmp_path)
    ts = np.sort(BASE + rng.uniform(0, 500, 1000))
    seen = 0
    for part in np.array_split(ts, 17):
        seen += sum(len(w.flows) for w in agg.add(batch(list(part))))
    seen += sum(len(w.flows) for w in agg.flush())
    assert seen == 1000


def test_reconfigure_with_new_length_hands_open_windows_out(tmp_path):
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path)
    agg.add(batch([BASE + 1]))
    agg.reconfigure(WindowsConfig(length_seconds=30))
    (w,) = agg.add(FlowBatch.empty())
    assert w.end - w.start == 60 and agg.length == 30


def test_report_schema_top_talkers_and_detections(tmp_path):
    agg = WindowAggregator(WindowsConfig(length_seconds=60, top_talkers=2), tmp_path)
    flows = FlowBatch.concat(
        [
            batch([BASE + 1] * 3, src="10.0.0.5", fwd_bytes=1000),
            batch([BASE + 2], src="10.0.0.6", fwd_bytes=10, proto=17),
            batch([BASE + 3], src="10.0.0.7", fwd_bytes=5, proto=1),
        ]
    )
    agg.add(flows)
    (w,) = agg.flush()
    det = Detection(
        "port_scan",
        "warning",
        "10.0.0.5",
        "10.0.0.2",
        w.start,
        w.end,
        {"distinct_ports": 20},
        "scan",
    )
    path = agg.write_report(
        w,
        empty_analysis(
            detections=[det],
            class_counts={"benign": 5},
            anomaly_scores=np.array([0.1, 0.9]),
            flows_analysed=5,
        ),
        "all quiet",
    )
    r = json.loads(path.read_text())
    assert r["schema_version"] == 2
    assert r["window"]["start"] == BASE and r["window"]["length_seconds"] == 60
    assert r["totals"]["flows"] == 5 and r["totals"]["packets"] == 15
    # bytes on the wire, as netmon_bytes_total counts them; payload under its own name
    assert r["totals"]["payload_bytes"] == 3 * 1050 + 60 + 55
    assert r["totals"]["bytes"] == r["totals"]["payload_bytes"] + 5 * 3 * 54
    assert r["protocols"]["tcp"]["bytes"] == 3 * (1000 + 50 + 3 * 54)
    assert r["protocols"]["tcp"]["flows"] == 3 and r["protocols"]["icmp"]["flows"] == 1
    assert [t["address"] for t in r["top_talkers"]] == ["10.0.0.5", "10.0.0.2"]
    assert r["top_talkers"][0]["bytes_sent"] == 3 * (1000 + 2 * 54)
    assert r["detections"][0]["evidence"] == {"distinct_ports": 20}
    assert r["detections_by_detector"] == {"port_scan": 1}
    assert r["classifications"] == {"benign": 5}
    assert r["anomaly"]["anomalous_flows"] == 1
    assert r["summary"] == "all quiet"


def test_reports_are_pruned_to_max_windows(tmp_path):
    agg = WindowAggregator(WindowsConfig(length_seconds=60, max_windows=3), tmp_path)
    closed = agg.add(batch([BASE + 60 * i for i in range(6)])) + agg.flush()
    assert len(closed) == 6
    paths = [agg.write_report(w, empty_analysis(), "") for w in closed]
    assert agg.reports_kept() == 3
    assert sorted(tmp_path.iterdir()) == paths[-3:]


def test_second_report_for_same_window_does_not_overwrite(tmp_path):
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path)
    agg.add(batch([BASE + 1]))
    (w,) = agg.flush()
    a = agg.write_report(w, empty_analysis(), "first")
    b = agg.write_report(w, empty_analysis(), "second")
    assert a != b and json.loads(a.read_text())["summary"] == "first"
    assert agg.reports_kept() == 2


def test_flows_without_time_are_kept(tmp_path):
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path)
    agg.add(batch([BASE + 5]))
    agg.add(batch([float("nan"), float("inf")]))
    (w,) = agg.flush()
    assert w.start == BASE and len(w.flows) == 3


def test_batches_with_different_columns_are_merged(tmp_path):
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path)
    full = batch([BASE + 1, BASE + 70])
    sparse = FlowBatch(
        {
            "src_ip": str_to_addrs(["10.0.0.9"]),
            "dst_ip": str_to_addrs(["10.0.0.2"]),
            "protocol": np.array([17], dtype=np.uint8),
            "first_ts": np.array([BASE + 2]),
            "last_ts": np.array([BASE + 2]),
        }
    )
    agg.add(full)
    agg.add(sparse)
    first, second = agg.flush()
    assert len(first.flows) == 2 and len(second.flows) == 1
    assert np.isnan(first.flows["Tot Fwd Pkts"]).sum() == 1


def test_a_broken_future_timestamp_does_not_drag_the_watermark(tmp_path):
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path, clock=lambda: BASE + 100)
    agg.add(batch([BASE + 1]))
    assert agg.add(batch([BASE + 10 * 86400])) == []  # ten days ahead of the clock
    assert agg.watermark < BASE
    (w,) = agg.flush()
    assert w.start == BASE and len(w.flows) == 2


def test_backfilled_old_capture_gets_its_own_windows(tmp_path):
    """Flows hours older than what is closed are not mixed into the current window."""
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path)
    now_flows = make_batch(2, first_ts=[BASE + 600, BASE + 900], last_ts=[BASE + 601, BASE + 901])
    closed = agg.add(now_flows)
    assert [w.start for w in closed] == [BASE + 600]
    old = BASE - 86400  # a capture from the day before, dropped in late
    old_flows = make_batch(3, first_ts=[old, old + 1, old + 70], last_ts=[old, old + 2, old + 71])
    closed = agg.add(old_flows)
    assert [(w.start, len(w.flows), w.late_flows) for w in closed] == [
        (old, 2, 0),
        (old + 60, 1, 0),
    ]
    assert agg.open_windows() == 1  # the current window (BASE+900) is still open


# -- interim records: windows see packets where they happen (issue 11 item 1) ---------


def test_a_long_flow_counts_in_the_windows_where_its_packets_are(tmp_path):
    """Slices carry packets and bytes to their windows; the flow counts once, at its start."""
    from netmon_exporter.flow_schema import RECORD_SLICE, RECORD_TAIL, RECORD_WHOLE

    rows = batch([BASE + 10, BASE + 60, BASE + 120, BASE + 10], dur=50.0)
    kinds = np.array([RECORD_SLICE, RECORD_SLICE, RECORD_TAIL, RECORD_WHOLE], dtype=float)
    packets = np.array([100.0, 120.0, 80.0, 300.0])
    cols = {**rows.columns, "flow_record": kinds, "Tot Fwd Pkts": packets}
    cols["Tot Bwd Pkts"] = np.zeros(4)
    cols["TotLen Fwd Pkts"] = packets * 10
    cols["TotLen Bwd Pkts"] = np.zeros(4)
    cols["fwd_wire_bytes"] = packets * 64
    cols["bwd_wire_bytes"] = np.zeros(4)
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path)
    windows = agg.add(FlowBatch(cols)) + agg.flush()
    reports = [agg.report_dict(w, empty_analysis()) for w in windows]
    assert [r["totals"]["packets"] for r in reports] == [100, 120, 80]
    assert [r["totals"]["flows"] for r in reports] == [1, 0, 0]
    assert [r["totals"]["bytes"] for r in reports] == [6400, 7680, 5120]
    assert [r["totals"]["payload_bytes"] for r in reports] == [1000, 1200, 800]
    assert [r["top_talkers"][0]["bytes_sent"] for r in reports] == [6400, 7680, 5120]
    assert reports[0]["analysis"]["flows_sampled_out"] == 0


_CUTS = st.lists(st.integers(min_value=0, max_value=40), max_size=3)


@_PROP
@given(spec=st.lists(_packet, min_size=1, max_size=40), cuts=_CUTS)
def test_per_window_packet_totals_equal_the_captures_packets_whatever_the_cuts(
    tmp_path, spec, cuts
):
    """Rotated files with carried flows: each window's totals hold exactly its packets."""
    import collections
    import dataclasses

    from netmon_exporter.pipeline import finish_carry, process_file

    settings = dataclasses.replace(_SET, interim_seconds=20.0)
    _, pkts = _build(tmp_path, spec)
    bounds = sorted({min(c, len(pkts)) for c in cuts} | {0, len(pkts)})
    agg = WindowAggregator(WindowsConfig(length_seconds=20), tmp_path / "w")
    windows, carry, flows_total = [], None, 0
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if hi <= lo:
            continue
        res = process_file(
            write(tmp_path / f"f{k}.pcap", pkts[lo:hi]), settings, carry=carry, final=False
        )
        windows += agg.add(res.flows)
        carry, flows_total = res.carry, flows_total + res.flow_count
    if carry is not None:
        ended = finish_carry(carry, settings)
        windows += agg.add(ended)
        flows_total += int(is_flow(ended).sum())
    windows += agg.flush()
    reports = [agg.report_dict(w, empty_analysis()) for w in windows]
    got = collections.Counter()
    for r in reports:
        got[int(r["window"]["start"] // 20)] += r["totals"]["packets"]
    assert +got == collections.Counter(int(t // 20) for t, _ in pkts)
    assert sum(r["totals"]["flows"] for r in reports) == flows_total


def test_an_idle_flow_counts_in_its_window_before_it_ends(tmp_path):
    """A UDP flow with packets in one window ends 120 s later (idle timeout): its first
    slice, cut at the next boundary, counts it where it began while that window is
    open; its whole record, much later, counts no second time (and is not late)."""
    from netmon_exporter.flow_schema import RECORD_SLICE, RECORD_TAIL, RECORD_WHOLE

    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path)
    first = batch([BASE + 10])
    cols = {**first.columns, "flow_record": np.array([float(RECORD_SLICE)])}
    cols["flow_age"] = np.zeros(1)
    assert agg.add(FlowBatch(cols)) == []
    # the watermark moves on (other traffic) and the flow's window closes before it ends
    closed = agg.add(batch([BASE + 130]))
    assert [w.start for w in closed] == [BASE]
    report = agg.report_dict(closed[0], empty_analysis())
    assert report["totals"]["flows"] == 1 and report["totals"]["late_flows"] == 0
    # ... 120 s after its last packet it ends: an empty last slice and its whole record
    rest = batch([BASE + 10, BASE + 10])
    cols = {**rest.columns, "flow_record": np.array([float(RECORD_TAIL), float(RECORD_WHOLE)])}
    cols["flow_age"] = np.array([0.5, 0.0])
    for k in ("Tot Fwd Pkts", "Tot Bwd Pkts", "TotLen Fwd Pkts", "TotLen Bwd Pkts"):
        cols[k] = np.array([0.0, cols[k][1]])
    agg.add(FlowBatch(cols))
    later = agg.add(batch([BASE + 250])) + agg.flush()
    reports = [agg.report_dict(w, empty_analysis()) for w in later]
    assert sum(r["totals"]["flows"] for r in reports) == 2  # the two other flows only
    assert sum(r["totals"]["late_flows"] for r in reports) == 0
