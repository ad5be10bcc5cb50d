"""The Analyzer: detectors and models per window, and reload semantics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from netmon_exporter.analysis import Analyzer
from netmon_exporter.config import DetectorsConfig, ModelsConfig
from netmon_exporter.flow_schema import make_batch, str_to_addrs
from netmon_exporter.models import ModelError, save_model, train_anomaly

T0 = 1_700_000_040.0


def scan_batch(n_ports: int = 30, ts: float = T0):
    n = n_ports
    return make_batch(
        n,
        src_ip=str_to_addrs(["10.0.0.66"] * n),
        dst_ip=str_to_addrs(["10.0.0.9"] * n),
        dst_port=np.arange(1, n + 1),
        protocol=np.full(n, 6),
        first_ts=np.full(n, ts),
        last_ts=np.full(n, ts),
        **{
            "Tot Fwd Pkts": np.ones(n),
            "Tot Bwd Pkts": np.zeros(n),
            "TotLen Fwd Pkts": np.zeros(n),
            "TotLen Bwd Pkts": np.zeros(n),
            "fwd_syn_cnt": np.ones(n),
            "bwd_syn_cnt": np.zeros(n),
            "fwd_rst_cnt": np.zeros(n),
            "bwd_rst_cnt": np.zeros(n),
        },
    )


def test_analyse_runs_detectors_and_reports_counts(tmp_path):
    a = Analyzer(DetectorsConfig(), ModelsConfig(), tmp_path)
    res = a.analyse(scan_batch(), T0, T0 + 60)
    assert [d.detector for d in res.detections] == ["port_scan"]
    assert res.flows_analysed == 30 and res.seconds > 0
    assert res.class_counts == {} and len(res.anomaly_scores) == 0
    assert set(res.detector_seconds) == {d.name for d in a.detectors}
    assert a.model_info() == []


def test_reload_keeps_state_of_unchanged_detectors(tmp_path):
    cfg = DetectorsConfig()
    a = Analyzer(cfg, ModelsConfig(), tmp_path)
    before = {d.name: d for d in a.detectors}
    a.analyse(scan_batch(10), T0, T0 + 60)  # 10 ports: below 15, remembered
    new = dataclasses.replace(cfg, beacon=dataclasses.replace(cfg.beacon, min_connections=20))
    a.reload(new, ModelsConfig())
    after = {d.name: d for d in a.detectors}
    assert after["port_scan"] is before["port_scan"]
    assert after["beacon"] is not before["beacon"]
    # the remembered probes plus 10 more ports cross the threshold
    more = scan_batch(20, T0 + 61)
    res = a.analyse(more, T0 + 60, T0 + 120)
    assert any(d.detector == "port_scan" for d in res.detections)


def test_reload_with_broken_model_changes_nothing(tmp_path):
    a = Analyzer(DetectorsConfig(), ModelsConfig(), tmp_path)
    detectors = a.detectors
    with pytest.raises(ModelError):
        a.reload(
            DetectorsConfig(
                port_scan=dataclasses.replace(DetectorsConfig().port_scan, min_ports=3)
            ),
            ModelsConfig(anomaly_path="missing.skops"),
        )
    assert a.detectors == detectors and a.anomaly_model is None


def normal_flows(rng, n, src="10.0.0.1"):
    return make_batch(
        n,
        src_ip=str_to_addrs([src] * n),
        dst_ip=str_to_addrs(["10.0.0.2"] * n),
        dst_port=np.full(n, 443),
        protocol=np.full(n, 6),
        first_ts=np.zeros(n),
        last_ts=np.ones(n),
        **{
            "Tot Fwd Pkts": rng.integers(5, 15, n),
            "Tot Bwd Pkts": rng.integers(8, 30, n),
            "TotLen Fwd Pkts": rng.integers(500, 2000, n),
            "TotLen Bwd Pkts": rng.integers(5000, 40000, n),
            "Flow Duration": rng.uniform(1e5, 1e6, n),
        },
    )


@pytest.fixture
def anomaly_state(tmp_path):
    base = normal_flows(np.random.default_rng(0), 1500)
    save_model(train_anomaly(base, data_digest="d", n_estimators=50), tmp_path / "a.skops")
    return tmp_path


def test_anomaly_model_scores_and_detects(anomaly_state):
    tmp_path = anomaly_state
    a = Analyzer(
        DetectorsConfig(), ModelsConfig(anomaly_path="a.skops", anomaly_threshold=0.6), tmp_path
    )
    assert a.model_info()[0]["kind"] == "anomaly"
    res = a.analyse(scan_batch(), T0, T0 + 60)
    assert len(res.anomaly_scores) == 30
    assert res.class_counts["anomalous"] == 30
    assert {d.detector for d in res.detections} == {"port_scan", "anomaly"}


def test_busy_host_with_a_few_odd_flows_is_not_an_anomaly_detection(anomaly_state):
    a = Analyzer(DetectorsConfig(), ModelsConfig(anomaly_path="a.skops"), anomaly_state)
    odd = scan_batch(25)
    busy = normal_flows(np.random.default_rng(5), 500, src="10.0.0.66")
    from netmon_exporter.flow_schema import FlowBatch

    res = a.analyse(FlowBatch.concat([busy, odd]), T0, T0 + 60)
    assert res.class_counts["anomalous"] >= 25
    assert "anomaly" not in {d.detector for d in res.detections}
