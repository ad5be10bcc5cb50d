"""Flow CSV writer (atomic, CICFlowMeter header) and reader (Java, Python, NTLFlowLyzer)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter.flow_schema import (
    CIC_CSV_COLUMNS,
    CIC_FEATURES,
    CIC_LONG_NAMES,
    CIC_PYTHON_NAMES,
    NTL_NAMES,
    addrs_to_str,
    str_to_addrs,
)
from netmon_exporter.flows.csv_format import format_flows
from netmon_exporter.flows.flow_csv import (
    OUTPUT_COLUMNS,
    FlowCsvError,
    FlowCsvWriter,
    csv_name_for,
    read_flow_csv,
)
from netmon_exporter.pipeline import FlowSettings, process_file

DATA = Path(__file__).parent / "data" / "pcaps"


def _read(path: Path):  # noqa: ANN202
    batches = list(read_flow_csv(path))
    assert len(batches) == 1
    return batches[0]


def test_header_is_the_java_84_columns_then_extras() -> None:
    assert len(CIC_CSV_COLUMNS) == 84
    assert OUTPUT_COLUMNS[:84] == CIC_CSV_COLUMNS
    assert len(CIC_PYTHON_NAMES) - 1 + 0 == 82  # minus "Flow ID", which it lacks
    assert len(set(CIC_LONG_NAMES.values())) == 84


def test_round_trip_of_our_own_csv(tmp_path: Path) -> None:
    res = process_file(DATA / "tcp-missing-syn.pcap", FlowSettings(), csv_dir=tmp_path)
    path = Path(res.csv_path)
    assert path.name == "tcp-missing-syn.pcap_Flow.csv"
    back = _read(path)
    fl = res.flows
    assert addrs_to_str(back["src_ip"]) == addrs_to_str(fl["src_ip"])
    assert back["src_port"].tolist() == fl["src_port"].tolist()
    assert back["first_ts"][0] == pytest.approx(fl["first_ts"][0], abs=1e-6)
    for name in CIC_FEATURES:
        assert back[name][0] == pytest.approx(fl[name][0], rel=1e-6, abs=1e-6), name


def test_rerun_overwrites_atomically(tmp_path: Path) -> None:
    for _ in range(2):
        res = process_file(DATA / "icmp.pcap", FlowSettings(), csv_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["icmp.pcap_Flow.csv"]
    assert res.csv_rows == 1
    with open(res.csv_path) as fh:
        assert len(fh.readlines()) == 2


def test_aborted_writer_leaves_nothing(tmp_path: Path) -> None:
    w = FlowCsvWriter(tmp_path / "x.csv")
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_csv_name_is_deterministic() -> None:
    assert csv_name_for(Path("/a/cap-001.pcap.gz")) == "cap-001.pcap_Flow.csv"
    assert csv_name_for(Path("b.pcapng")) == "b.pcapng_Flow.csv"


def _line(nums: list[np.ndarray], src: str = "1.1.1.1", dst: str = "2.2.2.2",
          ts: float = 0.0, label: str = "a,b", qname: str = "") -> list[str]:
    raw = format_flows(str_to_addrs([src]), str_to_addrs([dst]), np.array([1], np.uint16),
                       np.array([2], np.uint16), np.array([6], np.uint8), np.array([ts]),
                       np.array([label], dtype=object), np.array([qname], dtype=object), nums)
    rows = list(csv.reader([raw.decode()]))
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("x,text", [
    (0.0, "0"), (3.0, "3"), (-2.0, "-2"), (0.5, "0.5"), (123.456789, "123.456789"),
    (1 / 3, "0.333333"), (2.5e-7, "2.5e-7"), (1.5e13, "15000000000000"),
    (1.234567e17, "1.234567e17"), (float("nan"), ""), (float("inf"), "Inf"),
])
def test_number_formatting(x: float, text: str) -> None:
    row = _line([np.array([x])] + [np.array([0.0])] * 88)
    assert row[:7] == ["1.1.1.1-2.2.2.2-1-2-6", "1.1.1.1", "1", "2.2.2.2", "2", "6",
                       "1970-01-01 00:00:00.000000"]
    assert row[7] == text
    assert row[83] == "a,b"  # Label quoted
    assert len(row) == len(OUTPUT_COLUMNS)


@pytest.mark.parametrize("addr", ["::", "::1", "2001:db8::1", "2001:db8:0:0:1::1",
                                  "fe80::ce05:eff:fe88:0", "1:0:0:2:0:0:0:3", "1:2:3:4:5:6:7:8",
                                  "0.0.0.0", "255.255.255.255", "::ffff:0:1", "ff02::1:2",
                                  "1::", "::ffff:1:2:3"])
def test_addresses_are_formatted_like_python(addr: str) -> None:
    row = _line([np.zeros(1)] * 89, src=addr, dst="10.0.0.1")
    assert row[1] == addrs_to_str(str_to_addrs([addr]))[0]


@pytest.mark.parametrize("ts", [0.0, 1_700_000_000.123456, 951_782_400.5, 4_102_444_800.999999,
                                1_582_934_400.0, 86399.000001])
def test_timestamps_are_utc_iso(ts: float) -> None:
    row = _line([np.zeros(1)] * 89, ts=ts)
    expect = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert row[6] == expect


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_reads_java_long_header_with_spaces_and_infinity(tmp_path: Path) -> None:
    header = [" " + CIC_LONG_NAMES[c] for c in CIC_CSV_COLUMNS]
    row = ["f", "10.0.0.1", "1234", "10.0.0.2", "80", "6", "03/07/2017 08:55:58 AM"]
    row += ["1000000", "3", "2"] + ["1"] * (len(CIC_FEATURES) - 3) + ["DoS Hulk"]
    idx = 7 + CIC_FEATURES.index("Flow Byts/s")
    row[idx] = "Infinity"
    b = _read(_write_csv(tmp_path / "j.csv", header, [row]))
    assert addrs_to_str(b["src_ip"]) == ["10.0.0.1"]
    assert (b["Tot Fwd Pkts"][0], b["Tot Bwd Pkts"][0]) == (3, 2)
    assert np.isinf(b["Flow Byts/s"][0])
    assert b["label"][0] == "DoS Hulk"
    assert b["first_ts"][0] == 1499072158.0  # day first: 3 July 2017, UTC
    assert b["last_ts"][0] == 1499072159.0


def test_reads_python_cicflowmeter_header(tmp_path: Path) -> None:
    names = [n for n in CIC_PYTHON_NAMES.values() if n]
    row = {n: "2" for n in names}
    row.update(src_ip="192.0.2.1", dst_ip="2001:db8::1", src_port="5", dst_port="6",
               protocol="17", timestamp="2020-06-11 12:00:00")
    b = _read(_write_csv(tmp_path / "p.csv", names, [[row[n] for n in names]]))
    assert addrs_to_str(b["dst_ip"]) == ["2001:db8::1"]
    assert b["Flow Duration"][0] == 2 and b["Fwd Pkts/b Avg"][0] == 2
    assert np.isnan(b["fwd_syn_cnt"][0])


def test_reads_ntlflowlyzer_header_missing_columns_are_nan(tmp_path: Path) -> None:
    names = ["flow_id", "timestamp", "src_ip", "src_port", "dst_ip", "dst_port", "protocol",
             "duration", "packets_count", "fwd_packets_count", "bwd_packets_count",
             "fwd_total_payload_bytes", "bwd_total_payload_bytes", "payload_bytes_mean",
             "packets_IAT_mean", "handshake_duration", "label"]
    row = ["x", "1600000000", "10.1.1.1", "1", "10.1.1.2", "2", "6", "5", "7", "4", "3",
           "100", "50", "21.4", "8", "1", "benign"]
    b = _read(_write_csv(tmp_path / "n.csv", names, [row]))
    assert (b["Tot Fwd Pkts"][0], b["Tot Bwd Pkts"][0], b["TotLen Fwd Pkts"][0]) == (4, 3, 100)
    assert b["Pkt Len Mean"][0] == 21.4 and b["Pkt Size Avg"][0] == 21.4
    assert np.isnan(b["Fwd Act Data Pkts"][0])  # NTLFlowLyzer lacks it: missing, not 0
    assert b["first_ts"][0] == 1600000000.0 and b["label"][0] == "benign"
    assert set(NTL_NAMES) <= set(CIC_CSV_COLUMNS)


@pytest.mark.parametrize("content", ["", "a,b,c\n1,2,3\n", "\x00\x01\x02"])
def test_unrecognised_csv_is_rejected(tmp_path: Path, content: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(FlowCsvError):
        list(read_flow_csv(f))
