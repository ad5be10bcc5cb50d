"""Model training, safe saving/loading with skops, and refusal of bad or untrusted files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from netmon_exporter.flow_schema import FlowBatch, make_batch
from netmon_exporter.models import (
    ModelError,
    load_model,
    metadata_path,
    normalise_label,
    save_model,
    train_anomaly,
    train_classifier,
)


def web_flows(rng: np.random.Generator, n: int) -> FlowBatch:
    fwd = rng.integers(5, 15, n).astype(float)
    return make_batch(
        n,
        dst_port=np.full(n, 443),
        protocol=np.full(n, 6),
        first_ts=np.zeros(n),
        last_ts=np.ones(n),
        **{
            "Flow Duration": rng.uniform(1e5, 1e6, n),
            "Tot Fwd Pkts": fwd,
            "Tot Bwd Pkts": fwd * 2,
            "TotLen Fwd Pkts": fwd * 120,
            "TotLen Bwd Pkts": fwd * 1400,
            "SYN Flag Cnt": np.full(n, 2),
            "ACK Flag Cnt": fwd * 3,
            "Init Fwd Win Byts": np.full(n, 64240),
        },
    )


def probe_flows(n: int) -> FlowBatch:
    return make_batch(
        n,
        dst_port=np.arange(1, n + 1),
        protocol=np.full(n, 6),
        first_ts=np.zeros(n),
        last_ts=np.zeros(n),
        **{
            "Flow Duration": np.full(n, 50.0),
            "Tot Fwd Pkts": np.ones(n),
            "Tot Bwd Pkts": np.ones(n),
            "TotLen Fwd Pkts": np.zeros(n),
            "TotLen Bwd Pkts": np.zeros(n),
            "SYN Flag Cnt": np.ones(n),
            "RST Flag Cnt": np.ones(n),
            "Init Fwd Win Byts": np.full(n, 1024),
        },
    )


@pytest.fixture(scope="module")
def anomaly_file(tmp_path_factory):
    model = train_anomaly(
        web_flows(np.random.default_rng(0), 2000), data_digest="sha256:abc", n_estimators=50
    )
    path = tmp_path_factory.mktemp("m") / "anomaly.skops"
    save_model(model, path)
    return path


def test_anomaly_model_round_trip_scores_outliers_higher(anomaly_file):
    model = load_model(anomaly_file)
    assert model.kind == "anomaly"
    normal = model.score(web_flows(np.random.default_rng(1), 300))
    odd = model.score(probe_flows(300))
    assert normal.min() >= 0 and odd.max() <= 1
    assert np.median(odd) > np.quantile(normal, 0.95)
    assert set(model.classify(probe_flows(50), threshold=0.5)) <= {"benign", "anomalous"}
    md = json.loads(metadata_path(anomaly_file).read_text())
    for key in (
        "features",
        "versions",
        "training_data_digest",
        "trained_at",
        "algorithm",
        "model_sha256",
        "classes",
    ):
        assert key in md
    info = model.info()
    assert info["kind"] == "anomaly" and info["algorithm"] == "IsolationForest"


def test_classifier_reports_per_class_metrics_and_classifies():
    rng = np.random.default_rng(0)
    flows = FlowBatch.concat([web_flows(rng, 400), probe_flows(400)])
    labels = np.array(["BENIGN"] * 400 + ["PortScan"] * 400, dtype=object)
    model, report = train_classifier(flows, labels, data_digest="x", n_estimators=20)
    assert report["portscan"]["recall"] > 0.9 and report["benign"]["precision"] > 0.9
    assert set(model.classes) == {"benign", "portscan"}
    assert (model.classify(probe_flows(20)) == "portscan").all()
    assert model.score(probe_flows(20)).min() > 0.5


def test_normalise_label():
    assert normalise_label(" BENIGN ") == "benign"
    assert normalise_label("DoS  Hulk") == "dos hulk"


def test_missing_files_are_refused(tmp_path, anomaly_file):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.skops")
    lone = tmp_path / "lone.skops"
    lone.write_bytes(anomaly_file.read_bytes())
    with pytest.raises(ModelError, match="metadata file is missing"):
        load_model(lone)


def test_tampered_model_is_refused(tmp_path, anomaly_file):
    path = tmp_path / "a.skops"
    path.write_bytes(anomaly_file.read_bytes() + b"x")
    metadata_path(path).write_text(metadata_path(anomaly_file).read_text())
    with pytest.raises(ModelError, match="does not match its metadata"):
        load_model(path)


def _refused_with_matching_digest(path, anomaly_file, match: str) -> None:
    """`path` given `anomaly_file`'s metadata with its own digest still does not load."""
    from netmon_exporter.models import file_sha256

    md = json.loads(metadata_path(anomaly_file).read_text())
    md["model_sha256"] = file_sha256(path)
    metadata_path(path).write_text(json.dumps(md))
    with pytest.raises(ModelError, match=match):
        load_model(path)


def test_garbage_with_matching_digest_is_refused(tmp_path, anomaly_file):
    path = tmp_path / "g.skops"
    path.write_bytes(b"not a zip archive")
    _refused_with_matching_digest(path, anomaly_file, "not a readable skops file")


def test_untrusted_types_are_refused(tmp_path, anomaly_file):
    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "evil.skops"
    sio.dump(Pipeline([("f", FunctionTransformer(func=json.loads))]), path)
    _refused_with_matching_digest(path, anomaly_file, "allow-list")


def test_train_command_baseline_and_labelled(tmp_path, capsys):
    from netmon_exporter.cli import main
    from netmon_exporter.flows.flow_csv import FlowCsvWriter
    from netmon_exporter.pipeline import FlowSettings, process_file
    from netmon_exporter.tools.scenarios import generate, label_flows

    csvs = tmp_path / "csv"
    csvs.mkdir()
    for kind in ("benign", "port_scan"):
        sc = generate(kind, 9, tmp_path, duration=120, intensity=0.3)
        flows = process_file(sc.path, FlowSettings()).flows
        flows = FlowBatch({**flows.columns, "label": label_flows(flows, sc)})
        writer = FlowCsvWriter(csvs / f"{kind}.csv")
        writer.write(flows)
        writer.close()
    out = tmp_path / "m" / "anomaly.skops"
    assert (
        main(
            [
                "train",
                "--baseline",
                str(tmp_path / "scenario-benign-seed9.pcap"),
                "-o",
                str(out),
                "--trees",
                "20",
            ]
        )
        == 0
    )
    assert load_model(out).kind == "anomaly"
    clf = tmp_path / "m" / "classifier.skops"
    assert main(["train", "--labelled", str(csvs), "-o", str(clf), "--trees", "10"]) == 0
    text = capsys.readouterr().out
    assert "port_scan" in text and "precision" in text and "saved classifier model" in text
    model = load_model(clf)
    assert set(model.classes) == {"benign", "port_scan"}
    md = json.loads(metadata_path(clf).read_text())
    assert md["training_data_digest"].startswith("sha256:")


def test_train_command_reports_unusable_input(tmp_path, capsys):
    from netmon_exporter.cli import main

    assert main(["train", "--labelled", str(tmp_path / "none")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert main(["train", "--labelled", str(tmp_path)]) == 2


def test_train_command_reads_cic_ids2017_headers(tmp_path, capsys):
    """CIC-IDS2017 'TrafficLabelling' CSVs: long names with leading spaces, BENIGN/PortScan."""
    from netmon_exporter.cli import main
    from netmon_exporter.flows.csv_dialects import CIC_LONG_NAMES

    rng = np.random.default_rng(3)
    flows = FlowBatch.concat([web_flows(rng, 300), probe_flows(300)])
    labels = ["BENIGN"] * 300 + ["PortScan"] * 300
    shorts = [
        "Src IP",
        "Src Port",
        "Dst IP",
        "Dst Port",
        "Protocol",
        "Timestamp",
        "Flow Duration",
        "Tot Fwd Pkts",
        "Tot Bwd Pkts",
        "TotLen Fwd Pkts",
        "TotLen Bwd Pkts",
        "SYN Flag Cnt",
        "RST Flag Cnt",
        "ACK Flag Cnt",
        "Init Fwd Win Byts",
    ]
    header = ", ".join(f" {CIC_LONG_NAMES[s]}" for s in shorts) + ", Label"
    lines = [header]
    for i in range(len(flows)):
        values = [
            "192.168.10.5",
            "40000",
            "192.168.10.50",
            str(int(flows["dst_port"][i])),
            "6",
            "3/7/2017 8:55",
        ]
        values += [
            f"{float(flows[s][i]):g}" if not np.isnan(flows[s][i]) else "0" for s in shorts[6:]
        ]
        lines.append(", ".join(values + [labels[i]]))
    csv_path = tmp_path / "Friday-WorkingHours-Afternoon-PortScan.pcap_ISCX.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "clf.skops"
    assert main(["train", "--labelled", str(csv_path), "-o", str(out), "--trees", "10"]) == 0
    assert "portscan" in capsys.readouterr().out
    assert set(load_model(out).classes) == {"benign", "portscan"}
