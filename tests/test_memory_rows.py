"""What the main process keeps of flows: narrow columns, bounded samples, exact tallies.

Issue 9 item 3 / issue 12: a flood of one-packet flows must not grow the worker's
result, the pipe or the windows without bound, and detections must still work on a
window that was thinned.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from netmon_exporter import recording
from netmon_exporter.analysis import Analyzer
from netmon_exporter.config import DetectorsConfig, FlowsConfig, ModelsConfig, WindowsConfig
from netmon_exporter.flow_sample import (
    ANALYSIS_FEATURES,
    ANALYSIS_STRINGS,
    FILE_ROW_CAP,
    WEIGHT,
    FlowSample,
    SampledFlows,
    narrow,
    water_level,
    weights,
)
from netmon_exporter.flow_schema import (
    CIC_FEATURES,
    KEY_COLUMNS,
    FlowBatch,
    make_batch,
    str_to_addrs,
)
from netmon_exporter.ingest.workers import _PART_ROWS, Task, WorkerPool
from netmon_exporter.metrics import build_metrics
from netmon_exporter.models import DEFAULT_FEATURES
from netmon_exporter.pipeline import (
    DEFAULT_MAX_OPEN_FLOWS,
    FlowSettings,
    finish_carry,
    finish_carry_rows,
    process_file,
)
from netmon_exporter.window import WindowAggregator, build_report, top_talkers

from .flood_capture import write_syn_flood
from .test_features import _captures, _ours_by_tuple, reference_flows

ROOT = Path(__file__).resolve().parents[1]
PCAPS = Path(__file__).parent / "data" / "pcaps"
T0 = 1_700_000_040.0
VICTIM = "10.0.0.1"
SCANNER = "192.0.2.7"


def test_the_default_cap_is_the_config_default() -> None:
    assert FlowSettings().max_open_flows == FlowsConfig().max_open_flows == DEFAULT_MAX_OPEN_FLOWS


def test_narrow_rows_equal_the_reference_within_float32() -> None:
    for name in ("dns-edns-ecs.pcap", "tcp-handshake-reorder.pcap", "icmp.pcap"):
        full = process_file(PCAPS / name, FlowSettings()).flows
        rows = narrow(full)
        for key in KEY_COLUMNS:
            assert rows[key].dtype == KEY_COLUMNS[key]
            assert np.array_equal(rows[key], full[key], equal_nan=True), key
        for col in ANALYSIS_FEATURES:
            assert rows[col].dtype == np.float32
            # float32 keeps 24 bits: relative error at most 2**-24 (documented)
            assert np.allclose(rows[col], full[col], rtol=2**-24, atol=0, equal_nan=True), col
        assert list(rows["dns_qname"]) == list(full["dns_qname"])
        assert (weights(rows) == 1).all()


@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_narrow_rows_match_the_scapy_slow_path(path: Path) -> None:
    rows = narrow(
        process_file(path, FlowSettings(idle_timeout_seconds=1e6, active_timeout_seconds=1e7)).flows
    )
    ours, ref, compared = _ours_by_tuple(rows), reference_flows(path), 0
    for key, r in ref.items():
        if len(ours.get(key, [])) != 1:  # closed and reopened: one flow in the slow path
            continue
        i = ours[key][0]
        for name in set(ANALYSIS_FEATURES) & set(CIC_FEATURES):
            # float32 rounding (2**-24) on top of the slow path's own tolerance
            assert rows[name][i] == pytest.approx(r[name], rel=2**-24 + 1e-9, abs=1e-6), name
        compared += 1
    assert compared >= 1


def _names_read(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    pattern = r'(?:\bnum|\bcol|_num)\(flows, "([^"]+)"\)|flows\["([^"]+)"\]'
    return {a or b for a, b in re.findall(pattern, text)}


def test_the_rows_hold_every_column_detectors_reports_and_models_read() -> None:
    pkg = ROOT / "netmon_exporter"
    read: set[str] = set()
    for path in [*sorted((pkg / "detectors").glob("*.py")), pkg / "window.py", pkg / "analysis.py"]:
        read |= _names_read(path)
    read |= set(DEFAULT_FEATURES)
    kept = set(KEY_COLUMNS) | set(ANALYSIS_FEATURES) | set(ANALYSIS_STRINGS)
    assert read, "the pattern no longer finds column reads"
    assert read <= kept, sorted(read - kept)


def test_water_level() -> None:
    assert water_level(np.array([5, 5]), 100) == 5
    assert water_level(np.array([1, 2, 1000]), 103) == 100
    assert water_level(np.array([10] * 10), 55) == 5
    assert water_level(np.array([1, 1, 1, 50]), 4) == 1


def mixed_traffic(flood: int, seed: int = 0) -> FlowBatch:
    """A spoofed SYN flood to VICTIM:80, a vertical scan from SCANNER and a few clients."""
    rng = np.random.default_rng(seed)
    src = [f"11.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(flood)]
    src += [SCANNER] * 300 + [f"10.9.0.{i % 50}" for i in range(200)]
    dst = [VICTIM] * flood + ["10.0.0.99"] * 300 + ["10.0.0.50"] * 200
    dport = [80] * flood + list(range(1, 301)) + [443] * 200
    n = len(src)
    ts = np.concatenate(
        [
            np.sort(rng.uniform(T0, T0 + 30, flood)),
            T0 + np.arange(300) * 0.05,
            rng.uniform(T0, T0 + 50, 200),
        ]
    )
    answered = np.r_[np.zeros(flood + 300), np.ones(200)]
    return make_batch(
        n,
        src_ip=str_to_addrs(src),
        dst_ip=str_to_addrs(dst),
        src_port=rng.integers(1024, 65535, n),
        dst_port=dport,
        protocol=[6] * n,
        first_ts=ts,
        last_ts=ts + answered * 0.2,
        **{
            "Tot Fwd Pkts": 1 + answered * 5,
            "Tot Bwd Pkts": answered * 5,
            "TotLen Fwd Pkts": answered * 400,
            "TotLen Bwd Pkts": answered * 9000,
            "Flow Duration": answered * 0.2e6,
            "fwd_syn_cnt": np.ones(n),
            "bwd_syn_cnt": answered,
            "fwd_rst_cnt": np.zeros(n),
            "bwd_rst_cnt": np.zeros(n),
        },
    )


def _chunks(batch: FlowBatch, size: int) -> list[FlowBatch]:
    return [batch.take(np.arange(i, min(i + size, len(batch)))) for i in range(0, len(batch), size)]


def test_a_sample_thins_the_flood_and_keeps_small_groups_whole() -> None:
    traffic = mixed_traffic(60_000)
    runs = []
    for _ in range(2):
        sample = FlowSample(cap=10_000)
        for part in _chunks(traffic, 4096):
            sample.add(part)
            assert len(sample) <= 10_000
        runs.append(sample.result())
    got = runs[0]
    assert isinstance(got, SampledFlows) and len(got) <= 10_000
    assert got.flows_total == len(traffic) and got.sampled_out == len(traffic) - len(got)
    assert int(got.tally["packets"].sum()) == int(
        (traffic["Tot Fwd Pkts"] + traffic["Tot Bwd Pkts"]).sum()
    )
    src = np.array(got["src_ip"])
    assert (src == str_to_addrs([SCANNER])[0]).sum() == 300  # every probe of the scan
    assert (got["dst_port"] == 443).sum() == 200  # every client flow
    flood = got["dst_port"] == 80
    assert 5_000 < flood.sum() < 10_000
    assert (got[WEIGHT][~flood] == 1).all()
    # the weights estimate how many flows the kept ones stand for (unbiased; here within 3 %)
    assert abs(float(got[WEIGHT][flood].astype(np.float64).sum()) / 60_000 - 1) < 0.03
    # reproducible: priorities are hashes of the flows, not random draws
    assert np.array_equal(runs[1]["first_ts"], got["first_ts"])


def test_detections_and_totals_survive_a_thinned_window(tmp_path: Path) -> None:
    traffic = mixed_traffic(100_000, seed=1)
    agg = WindowAggregator(WindowsConfig(length_seconds=60), tmp_path, row_cap=20_000)
    for part in _chunks(traffic, 8192):
        assert agg.add(part) == []
        assert agg.rows_held() <= 20_000
    (window,) = agg.flush()
    assert len(window.flows) <= 20_000
    analyzer = Analyzer(DetectorsConfig(), ModelsConfig(), tmp_path)
    analysis = analyzer.analyse(window.flows, window.start, window.end)
    found = {(d.detector, d.source, d.target) for d in analysis.detections}
    assert ("syn_flood", "many", VICTIM) in found, found
    assert ("port_scan", SCANNER, "10.0.0.99") in found, found
    report = build_report(window, analysis, "", 3)
    assert report["totals"]["flows"] == len(traffic)
    assert report["protocols"]["tcp"]["flows"] == len(traffic)
    assert report["totals"]["packets"] == int(
        (traffic["Tot Fwd Pkts"] + traffic["Tot Bwd Pkts"]).sum()
    )
    assert report["analysis"]["flows_analysed"] == len(window.flows)
    assert report["analysis"]["flows_sampled_out"] == len(traffic) - len(window.flows)
    assert [t["address"] for t in report["top_talkers"]] == ["10.0.0.50"] + [
        t["address"] for t in report["top_talkers"][1:]
    ]
    victim = next(t for t in top_talkers(window.flows, 100_000) if t["address"] == VICTIM)
    assert abs(victim["flows"] / 100_000 - 1) < 0.05  # estimated from the weights


def test_a_file_result_counts_every_flow_even_when_its_rows_are_a_sample() -> None:
    m = build_metrics(CollectorRegistry())
    res = process_file(PCAPS / "dns-edns-ecs.pcap", FlowSettings())
    sample = FlowSample(cap=1)
    sample.add(res.flows)
    thinned = replace(res, flows=sample.result(), flows_evicted=7)
    assert len(thinned.flows) < res.flow_count
    counts = res.flow_counts()
    assert thinned.flow_counts() == counts and sum(counts.values()) == res.flow_count
    assert counts == {"tcp": 8, "udp": 61}
    recording.record_file_done(m, thinned, "pcap", None)
    for proto, n in counts.items():
        assert m.registry.get_sample_value("netmon_flows_total", {"protocol": proto}) == n
    assert m.registry.get_sample_value("netmon_flows_evicted_total") == 7


def test_carried_flows_come_back_narrow_and_complete(tmp_path: Path) -> None:
    cap = tmp_path / "flood-1.pcap"
    write_syn_flood(cap, 20_000, seconds=2.0, start=T0)
    res = process_file(cap, FlowSettings(), final=False)
    assert res.carry is not None and res.flow_count == 0
    rows = finish_carry_rows(res.carry, FlowSettings())
    full = finish_carry(res.carry, FlowSettings())
    assert len(rows) == len(full) == 20_000
    assert set(rows.columns) == {*KEY_COLUMNS, *ANALYSIS_FEATURES, *ANALYSIS_STRINGS, WEIGHT}
    assert np.array_equal(rows["first_ts"], full["first_ts"])


def test_a_worker_sends_a_bounded_sample_in_parts(tmp_path: Path) -> None:
    flows = FILE_ROW_CAP + 50_000
    cap = tmp_path / "flood.pcap.gz"
    write_syn_flood(cap, flows, seconds=5.0, start=T0)
    pool = WorkerPool(process_file, 1)
    try:
        pool.resize(1)
        deadline = time.monotonic() + 60
        while pool.idle() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        task = Task(1, str(cap), FlowSettings(), None, None, True, 120.0)
        pool.submit(task)
        outcomes = []
        while not outcomes and time.monotonic() < deadline:
            outcomes = pool.wait(0.5)
    finally:
        pool.shutdown(5.0, lambda o: None)
    (outcome,) = outcomes
    res = outcome.result
    assert res is not None, outcome.message
    assert isinstance(res.flows, SampledFlows)
    assert _PART_ROWS < len(res.flows) <= FILE_ROW_CAP  # it came in several parts
    assert res.flows.flows_total == res.flow_count == flows
    assert res.flow_counts() == {"tcp": flows} and res.flows_evicted == 0
    assert set(res.flows.columns) == {*KEY_COLUMNS, *ANALYSIS_FEATURES, *ANALYSIS_STRINGS, WEIGHT}


def test_a_worker_with_interim_records_says_how_far_it_read(tmp_path: Path) -> None:
    """Slices come with the file's sample; a no-flow tally entry at its last packet lets
    the windows before it close (issue 11 item 1)."""
    from netmon_exporter.flow_schema import is_first, is_flow, is_slice
    from netmon_exporter.ingest.workers import _run

    cap = tmp_path / "s0-1.pcap.gz"
    write_syn_flood(cap, 2000, seconds=150.0, start=T0)  # three windows, one-packet flows
    task = Task(1, str(cap), FlowSettings(interim_seconds=60.0), None, None, False, 120.0)
    res, sample = _run(process_file, task, streams=True)
    assert sample is not None and res.last_ts is not None
    tally = sample.tally()
    assert float(tally["last"].max()) == pytest.approx(res.last_ts)
    rows = sample.result()
    assert int(is_flow(rows).sum()) == res.flow_count == int(tally["whole"].sum())
    # flows are counted as they begin (their first record), the ones still open too;
    # the marker counts no flow
    assert int(tally["flows"].sum()) == int(is_first(rows).sum()) > res.flow_count
    assert int(tally["packets"].sum()) == int(
        (rows["Tot Fwd Pkts"] + rows["Tot Bwd Pkts"])[is_slice(rows)].sum()
    )
