"""``netmon-exporter train --labelled`` on CIC-IDS2017 "MachineLearningCVE"-style CSVs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter.cli import main
from netmon_exporter.models import load_model
from tests.test_flow_csv import CICIDS2017_MLCVE_HEADER

COLUMNS = [c.strip() for c in CICIDS2017_MLCVE_HEADER.split(",")]


def _row(values: dict[str, str]) -> str:
    out = []
    for c in COLUMNS:
        out.append(values.get(c, "0"))
    return ",".join(out)


def _write_mlcve(path: Path, n_benign: int = 160, n_scan: int = 140, seed: int = 7) -> Path:
    """Web-like BENIGN flows and one-packet SYN PortScan probes (rates Infinity/NaN)."""
    rng = np.random.default_rng(seed)
    lines = [CICIDS2017_MLCVE_HEADER]
    for _ in range(n_benign):
        fwd, bwd = int(rng.integers(5, 40)), int(rng.integers(4, 60))
        dur = int(rng.integers(50_000, 5_000_000))
        fb, bb = fwd * int(rng.integers(40, 400)), bwd * int(rng.integers(200, 1400))
        lines.append(
            _row(
                {
                    "Destination Port": str(rng.choice([80, 443, 53, 8080])),
                    "Flow Duration": str(dur),
                    "Total Fwd Packets": str(fwd),
                    "Total Backward Packets": str(bwd),
                    "Total Length of Fwd Packets": str(fb),
                    "Total Length of Bwd Packets": str(bb),
                    "Flow Bytes/s": f"{(fb + bb) / dur * 1e6:.6f}",
                    "Flow Packets/s": f"{(fwd + bwd) / dur * 1e6:.8f}",
                    "Flow IAT Mean": f"{dur / (fwd + bwd - 1):.8f}",
                    "ACK Flag Count": "1",
                    "PSH Flag Count": "1",
                    "Init_Win_bytes_forward": str(rng.choice([29200, 65535, 8192])),
                    "Init_Win_bytes_backward": str(rng.choice([28960, 65160, 235])),
                    "Packet Length Mean": f"{(fb + bb) / (fwd + bwd):.8f}",
                    "Label": "BENIGN",
                }
            )
        )
    for _ in range(n_scan):
        one = rng.random() < 0.5
        dur = 0 if one else int(rng.integers(20, 200))
        lines.append(
            _row(
                {
                    "Destination Port": str(rng.integers(1, 10_000)),
                    "Flow Duration": str(dur),
                    "Total Fwd Packets": "1",
                    "Total Backward Packets": "0" if one else "1",
                    "Flow Bytes/s": "NaN" if one else "0",
                    "Flow Packets/s": "Infinity" if one else f"{2 / dur * 1e6:.4f}",
                    "Fwd Packets/s": "Infinity" if one else f"{1 / dur * 1e6:.4f}",
                    "SYN Flag Count": "1",
                    "RST Flag Count": "0" if one else "1",
                    "Init_Win_bytes_forward": "1024",
                    "Init_Win_bytes_backward": "-1" if one else "0",
                    "Fwd Header Length": "24",
                    "Label": "PortScan",
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_labelled_on_machine_learning_cve_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = _write_mlcve(tmp_path / "Friday-WorkingHours-Afternoon-PortScan.pcap_ISCX.csv")
    out = tmp_path / "models" / "classifier.skops"
    assert main(["train", "--labelled", str(csv_path), "-o", str(out), "--trees", "20"]) == 0
    text = capsys.readouterr().out
    assert "read 1 file(s): 300 flows" in text
    assert "precision" in text and "recall" in text
    for cls in ("benign", "portscan"):
        m = re.search(rf"^\s+{cls}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+(\d+)$", text, re.M)
        assert m, f"no per-class line for {cls}:\n{text}"
        precision, recall = float(m.group(1)), float(m.group(2))
        assert precision >= 0.9 and recall >= 0.9, text
    model = load_model(out)
    assert set(model.classes) == {"benign", "portscan"}
    assert model.metadata["class_counts"] == {"benign": 160, "portscan": 140}


def test_train_labelled_rejects_a_csv_that_is_not_a_flow_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "sales.csv"
    f.write_text("Destination Port,price,Label\n80,3,BENIGN\n")
    assert main(["train", "--labelled", str(f), "-o", str(tmp_path / "m.skops")]) == 2
    err = capsys.readouterr().err
    assert "not a CICFlowMeter" in err and "sales.csv" in err
