"""Flow CSV writer (atomic, CICFlowMeter header) and reader (Java, Python, NTLFlowLyzer)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon_exporter.flow_schema import (
    CIC_FEATURES,
    EXTRA_FEATURES,
    FLOWS,
    SLICES,
    FlowBatch,
    addrs_to_str,
    str_to_addrs,
    view,
)
from netmon_exporter.flows import csv_format, flow_csv
from netmon_exporter.flows.csv_dialects import (
    CIC_CSV_COLUMNS,
    CIC_LONG_NAMES,
    CIC_PYTHON_NAMES,
    NTL_NAMES,
)
from netmon_exporter.flows.csv_format import format_flows
from netmon_exporter.flows.flow_csv import (
    OUTPUT_COLUMNS,
    FlowCsvError,
    FlowCsvWriter,
    csv_name_for,
    read_flow_csv,
)
from netmon_exporter.pipeline import CaptureFormatError, FlowSettings, process_file

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


def _flows_of(pcap: Path, interim: float = 0.0) -> list[FlowBatch]:
    got: list[FlowBatch] = []
    process_file(pcap, FlowSettings(interim_seconds=interim), collect=False, on_flows=got.append)
    return got


@pytest.mark.parametrize("interim", [False, True])
def test_a_background_writer_writes_the_same_bytes(tmp_path: Path, interim: bool) -> None:
    """The `flows` command formats rows on a thread of its own: the file is byte for byte
    what the writer makes on the calling thread (every test capture, in batches as the
    flow table hands them out, some larger than a formatting part)."""
    batches = [b for pcap in sorted(DATA.glob("*.pcap*")) for b in _flows_of(pcap, 1.0)]
    batches.append(FlowBatch.concat(batches * 40))  # > csv_format.ROWS_PER_CALL rows
    assert len(batches[-1]) > csv_format.ROWS_PER_CALL
    paths = []
    for background in (False, True):
        path = tmp_path / f"{background}.csv"
        w = FlowCsvWriter(path, interim=interim, background=background)
        for b in batches:
            w.write(b)
        w.close()
        paths.append(path)
        assert w.rows == sum(len(view(b, SLICES if interim else FLOWS)) for b in batches)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].stat().st_size > 100_000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_background_writer_hands_its_error_back_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails on the writer's thread (a full disk) is raised by the next
    write or by close; abort then removes the temporary file and stops the thread."""
    batch = FlowBatch.concat(_flows_of(DATA / "dns-edns-ecs.pcap"))
    calls = {"n": 0}
    real = flow_csv.format_rows

    def failing(part: FlowBatch) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(part)

    monkeypatch.setattr(flow_csv, "format_rows", failing)
    w = FlowCsvWriter(tmp_path / "out.csv", background=True)
    thread = w._thread
    assert thread is not None and thread.is_alive()
    with pytest.raises(OSError, match="No space left"):
        for _ in range(200):
            w.write(batch)
        w.close()
    w.abort()
    assert not thread.is_alive() and list(tmp_path.iterdir()) == []
    # an abort with parts still queued drops them and stops too
    monkeypatch.setattr(flow_csv, "format_rows", real)
    w = FlowCsvWriter(tmp_path / "out.csv", background=True)
    for _ in range(20):
        w.write(batch)
    thread = w._thread
    w.abort()
    assert thread is not None and not thread.is_alive() and list(tmp_path.iterdir()) == []


def test_csv_name_is_deterministic() -> None:
    assert csv_name_for(Path("/a/cap-001.pcap.gz")) == "cap-001.pcap_Flow.csv"
    assert csv_name_for(Path("b.pcapng")) == "b.pcapng_Flow.csv"


def _line(
    nums: list[np.ndarray],
    src: str = "1.1.1.1",
    dst: str = "2.2.2.2",
    ts: float = 0.0,
    label: str = "a,b",
    qname: str = "",
) -> list[str]:
    raw = format_flows(
        str_to_addrs([src]),
        str_to_addrs([dst]),
        np.array([1], np.uint16),
        np.array([2], np.uint16),
        np.array([6], np.uint8),
        np.array([ts]),
        np.array([label], dtype=object),
        np.array([qname], dtype=object),
        nums,
    )
    rows = list(csv.reader([raw.decode()]))
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize(
    "x,text",
    [
        (0.0, "0"),
        (3.0, "3"),
        (-2.0, "-2"),
        (0.5, "0.5"),
        (123.456789, "123.456789"),
        (1 / 3, "0.333333"),
        (2.5e-7, "2.5e-7"),
        (1.5e13, "15000000000000"),
        (1.234567e17, "1.234567e17"),
        (float("nan"), ""),
        (float("inf"), "Inf"),
    ],
)
def test_number_formatting(x: float, text: str) -> None:
    row = _line([np.array([x])] + [np.array([0.0])] * (len(CIC_FEATURES) + len(EXTRA_FEATURES) - 1))
    assert row[:7] == [
        "1.1.1.1-2.2.2.2-1-2-6",
        "1.1.1.1",
        "1",
        "2.2.2.2",
        "2",
        "6",
        "1970-01-01 00:00:00.000000",
    ]
    assert row[7] == text
    assert row[83] == "a,b"  # Label quoted
    assert len(row) == len(OUTPUT_COLUMNS)


@pytest.mark.parametrize(
    "addr",
    [
        "::",
        "::1",
        "2001:db8::1",
        "2001:db8:0:0:1::1",
        "fe80::ce05:eff:fe88:0",
        "1:0:0:2:0:0:0:3",
        "1:2:3:4:5:6:7:8",
        "0.0.0.0",
        "255.255.255.255",
        "::ffff:0:1",
        "ff02::1:2",
        "1::",
        "::ffff:1:2:3",
    ],
)
def test_addresses_are_formatted_like_python(addr: str) -> None:
    row = _line([np.zeros(1)] * 89, src=addr, dst="10.0.0.1")
    assert row[1] == addrs_to_str(str_to_addrs([addr]))[0]


@pytest.mark.parametrize(
    "ts",
    [0.0, 1_700_000_000.123456, 951_782_400.5, 4_102_444_800.999999, 1_582_934_400.0, 86399.000001],
)
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
    assert np.isnan(b["Flow Byts/s"][0])  # "Infinity" (a one-packet rate) is missing: NaN
    assert b["label"][0] == "DoS Hulk"
    assert b["first_ts"][0] == 1499072158.0  # day first: 3 July 2017, UTC
    assert b["last_ts"][0] == 1499072159.0


def test_reads_python_cicflowmeter_header(tmp_path: Path) -> None:
    names = [n for n in CIC_PYTHON_NAMES.values() if n]
    row = {n: "2" for n in names}
    row.update(
        src_ip="192.0.2.1",
        dst_ip="2001:db8::1",
        src_port="5",
        dst_port="6",
        protocol="17",
        timestamp="2020-06-11 12:00:00",
    )
    b = _read(_write_csv(tmp_path / "p.csv", names, [[row[n] for n in names]]))
    assert addrs_to_str(b["dst_ip"]) == ["2001:db8::1"]
    assert b["Flow Duration"][0] == 2 and b["Fwd Pkts/b Avg"][0] == 2
    assert np.isnan(b["fwd_syn_cnt"][0])


def test_reads_ntlflowlyzer_header_missing_columns_are_nan(tmp_path: Path) -> None:
    names = [
        "flow_id",
        "timestamp",
        "src_ip",
        "src_port",
        "dst_ip",
        "dst_port",
        "protocol",
        "duration",
        "packets_count",
        "fwd_packets_count",
        "bwd_packets_count",
        "fwd_total_payload_bytes",
        "bwd_total_payload_bytes",
        "payload_bytes_mean",
        "packets_IAT_mean",
        "handshake_duration",
        "label",
    ]
    row = [
        "x",
        "1600000000",
        "10.1.1.1",
        "1",
        "10.1.1.2",
        "2",
        "6",
        "5",
        "7",
        "4",
        "3",
        "100",
        "50",
        "21.4",
        "8",
        "1",
        "benign",
    ]
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


# CIC-IDS2017 MachineLearningCSV.zip ("MachineLearningCVE"), e.g.
# Monday-WorkingHours.pcap_ISCX.csv: 79 columns, long names mostly with a leading space,
# " Fwd Header Length" twice, no Flow ID / addresses / Source Port / Protocol / Timestamp.
CICIDS2017_MLCVE_HEADER = (
    " Destination Port, Flow Duration, Total Fwd Packets, Total Backward Packets,"
    "Total Length of Fwd Packets, Total Length of Bwd Packets, Fwd Packet Length Max,"
    " Fwd Packet Length Min, Fwd Packet Length Mean, Fwd Packet Length Std,"
    "Bwd Packet Length Max, Bwd Packet Length Min, Bwd Packet Length Mean,"
    " Bwd Packet Length Std,Flow Bytes/s, Flow Packets/s, Flow IAT Mean, Flow IAT Std,"
    " Flow IAT Max, Flow IAT Min,Fwd IAT Total, Fwd IAT Mean, Fwd IAT Std, Fwd IAT Max,"
    " Fwd IAT Min,Bwd IAT Total, Bwd IAT Mean, Bwd IAT Std, Bwd IAT Max, Bwd IAT Min,"
    "Fwd PSH Flags, Bwd PSH Flags, Fwd URG Flags, Bwd URG Flags, Fwd Header Length,"
    " Bwd Header Length,Fwd Packets/s, Bwd Packets/s, Min Packet Length, Max Packet Length,"
    " Packet Length Mean, Packet Length Std, Packet Length Variance,FIN Flag Count,"
    " SYN Flag Count, RST Flag Count, PSH Flag Count, ACK Flag Count, URG Flag Count,"
    " CWE Flag Count, ECE Flag Count, Down/Up Ratio, Average Packet Size,"
    " Avg Fwd Segment Size, Avg Bwd Segment Size, Fwd Header Length,Fwd Avg Bytes/Bulk,"
    " Fwd Avg Packets/Bulk, Fwd Avg Bulk Rate, Bwd Avg Bytes/Bulk, Bwd Avg Packets/Bulk,"
    "Bwd Avg Bulk Rate,Subflow Fwd Packets, Subflow Fwd Bytes, Subflow Bwd Packets,"
    " Subflow Bwd Bytes,Init_Win_bytes_forward, Init_Win_bytes_backward, act_data_pkt_fwd,"
    " min_seg_size_forward,Active Mean, Active Std, Active Max, Active Min,Idle Mean,"
    " Idle Std, Idle Max, Idle Min, Label"
)
# Rows of that file's shape (values as the dataset writes them: integers, long decimals,
# "Infinity" and "NaN" for rates of zero-duration flows, BENIGN / attack names).
CICIDS2017_MLCVE_ROWS = (
    "80,38308,1,1,6,6,6,6,6,0,6,6,6,0,313.250496,52.208416,38308,0,38308,38308,0,0,0,0,0,"
    "0,0,0,0,0,0,0,0,0,20,20,26.104208,26.104208,6,6,6,0,0,0,0,0,0,1,1,0,0,1,9,6,6,20,0,0,"
    "0,0,0,0,1,6,1,6,255,946,0,20,0,0,0,0,0,0,0,0,BENIGN",
    "389,479,11,5,172,326,79,0,15.63636364,31.4492376,163,0,65.2,89.27877687,1039665.971,"
    "33402.92276,31.93333333,25.51040871,73,0,479,47.9,38.9428356,109,1,401,100.25,"
    "101.7361784,237,3,0,0,0,0,368,176,22964.50939,10438.41336,0,163,29.29411765,"
    "56.52959922,3195.595588,0,0,0,1,0,0,0,0,0,31.125,15.63636364,65.2,368,0,0,0,0,0,0,11,"
    "172,5,326,29200,260,4,32,0,0,0,0,0,0,0,0,BENIGN",
    "22,0,2,0,0,0,0,0,0,0,0,0,0,0,NaN,Infinity,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,40,0,"
    "Infinity,0,0,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0,40,0,0,0,0,0,0,2,0,0,0,29200,-1,0,20,0,0,"
    "0,0,0,0,0,0,PortScan",
)


def test_reads_cic_ids2017_machine_learning_cve_csv(tmp_path: Path) -> None:
    f = tmp_path / "Monday-WorkingHours.pcap_ISCX.csv"
    f.write_text(CICIDS2017_MLCVE_HEADER + "\n" + "\n".join(CICIDS2017_MLCVE_ROWS) + "\n")
    assert len(CICIDS2017_MLCVE_HEADER.split(",")) == 79
    assert all(len(r.split(",")) == 79 for r in CICIDS2017_MLCVE_ROWS)
    b = _read(f)
    assert len(b) == 3
    assert addrs_to_str(b["src_ip"]) == ["::"] * 3 and addrs_to_str(b["dst_ip"]) == ["::"] * 3
    assert b["dst_port"].tolist() == [80, 389, 22] and b["src_port"].tolist() == [0, 0, 0]
    assert b["protocol"].tolist() == [0, 0, 0]
    assert np.isnan(b["first_ts"]).all() and np.isnan(b["last_ts"]).all()
    assert b["label"].tolist() == ["BENIGN", "BENIGN", "PortScan"]
    assert b["Flow Duration"].tolist() == [38308, 479, 0]
    assert b["Tot Fwd Pkts"].tolist() == [1, 11, 2]
    assert b["Fwd Header Len"].tolist() == [20, 368, 40]  # the first of the two columns
    assert b["Init Bwd Win Byts"].tolist() == [946, 260, -1]
    assert b["Fwd Seg Size Min"].tolist() == [20, 32, 20]
    assert b["Flow Byts/s"][1] == pytest.approx(1039665.971)
    for name in ("Flow Byts/s", "Flow Pkts/s", "Fwd Pkts/s"):  # "NaN" / "Infinity"
        assert np.isnan(b[name][2]), name
    assert np.isnan(b["fwd_syn_cnt"]).all()  # ours only: missing
    assert all(
        np.isfinite(b[c]).all()
        for c in CIC_FEATURES
        if c not in ("Flow Byts/s", "Flow Pkts/s", "Fwd Pkts/s")
    )


def test_machine_learning_cve_csv_through_the_pipeline(tmp_path: Path) -> None:
    """process_file reads it and writes our CSV: empty Timestamp, zero addresses."""
    f = tmp_path / "Tuesday-WorkingHours.pcap_ISCX.csv"
    f.write_text(CICIDS2017_MLCVE_HEADER + "\n" + "\n".join(CICIDS2017_MLCVE_ROWS) + "\n")
    (tmp_path / "out").mkdir()
    res = process_file(f, FlowSettings(), csv_dir=tmp_path / "out")
    assert res.kind == "csv" and res.flow_count == 3 and res.csv_rows == 3
    assert res.csv_path is not None
    with open(res.csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[1][:7] == ["::-::-0-80-0", "::", "0", "::", "80", "0", ""]
    assert rows[3][83] == "PortScan"
    back = _read(Path(res.csv_path))
    assert np.isnan(back["first_ts"]).all() and back["dst_port"].tolist() == [80, 389, 22]


# CIC-IDS2018 (CSE-CIC-IDS2018, e.g. Wednesday-14-02-2018_TrafficForML_CICFlowMeter.csv):
# the short header without Flow ID, Src IP, Src Port, Dst IP; day-first timestamps. Some
# files repeat the header line inside the data.
CICIDS2018_HEADER = ",".join(CIC_CSV_COLUMNS[4:])


def test_reads_cic_ids2018_csv(tmp_path: Path) -> None:
    assert CICIDS2018_HEADER.startswith("Dst Port,Protocol,Timestamp,Flow Duration,Tot Fwd Pkts")
    assert CICIDS2018_HEADER.endswith("Idle Mean,Idle Std,Idle Max,Idle Min,Label")
    nfeat = len(CIC_FEATURES)
    rows = [
        ["0", "0", "14/02/2018 08:31:01", "112641719", "3", "0"] + ["0"] * (nfeat - 3) + ["Benign"],
        ["443", "6", "14/02/2018 10:15:30", "2000000", "5", "4"]
        + ["1"] * (nfeat - 3)
        + ["FTP-BruteForce"],
    ]
    rows[1][3 + CIC_FEATURES.index("Flow Pkts/s")] = "Infinity"
    text = (
        "\n".join([CICIDS2018_HEADER, ",".join(rows[0]), CICIDS2018_HEADER, ",".join(rows[1])])
        + "\n"
    )
    f = tmp_path / "Wednesday-14-02-2018_TrafficForML_CICFlowMeter.csv"
    f.write_text(text)
    b = _read(f)
    assert len(b) == 2  # the repeated header line is not a flow
    assert b["dst_port"].tolist() == [0, 443] and b["protocol"].tolist() == [0, 6]
    assert addrs_to_str(b["src_ip"]) == ["::", "::"] and b["src_port"].tolist() == [0, 0]
    t0 = datetime(2018, 2, 14, 8, 31, 1, tzinfo=UTC).timestamp()
    t1 = datetime(2018, 2, 14, 10, 15, 30, tzinfo=UTC).timestamp()
    assert b["first_ts"].tolist() == [t0, t1]
    assert b["last_ts"].tolist() == [t0 + 112.641719, t1 + 2.0]
    assert b["Tot Fwd Pkts"].tolist() == [3, 5] and b["Tot Bwd Pkts"].tolist() == [0, 4]
    assert np.isnan(b["Flow Pkts/s"][1]) and b["Flow Byts/s"][1] == 1
    assert b["label"].tolist() == ["Benign", "FTP-BruteForce"]


@pytest.mark.parametrize(
    "content",
    [
        "Destination Port,Flow Duration,Label\n80,5,BENIGN\n",  # too few features
        "id,name,price,Label\n1,x,2.5,a\n",
        "Source IP,Destination IP,comment\n1.1.1.1,2.2.2.2,hi\n",  # addresses, no features
    ],
)
def test_csv_that_is_not_a_flow_csv_is_a_capture_format_error(tmp_path: Path, content: str) -> None:
    f = tmp_path / "other.csv"
    f.write_text(content)
    with pytest.raises(CaptureFormatError, match="not a CICFlowMeter.*flow CSV") as info:
        process_file(f, FlowSettings())
    assert info.value.reason == "format"
    assert str(f) in str(info.value)


# -- the compiled reader: same values as Python's float() and the csv module ----------------

TRICKY_NUMBERS = [
    "0",
    "-0",
    "+5",
    "7",
    " 12 ",
    "3.25",
    "0.1",
    ".5",
    "5.",
    "1e3",
    "2.5E-7",
    "1e22",
    "1e23",
    "123456789012345678901",
    "0.30000000000000004",
    "9007199254740993",
    "1.7976931348623157e308",
    "1e400",
    "5e-324",
    "-1e-400",
    "Infinity",
    "-Infinity",
    "NaN",
    "nan",
    "inf",
    "1_000",
    "abc",
    "",
    "1e",
    "1.2.3",
    "--1",
    "0x10",
    "15000000000000",
    "1.234567e17",
    "1439.9999999",
]


def _reference_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        return float("nan")
    return v if np.isfinite(v) else float("nan")


@pytest.mark.parametrize("block", [64, 1000, 1 << 20])
def test_compiled_reader_parses_like_python(
    tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import netmon_exporter.flows.flow_csv as fc

    monkeypatch.setattr(fc, "_BLOCK_BYTES", block)
    addrs = [
        "10.0.0.1",
        "010.0.0.1",
        "2001:db8::1",
        "::ffff:1.2.3.4",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "",
        "x",
        " 192.168.1.2 ",
        "0.0.0.0",
    ]
    header = (
        "Src IP,Dst IP,Src Port,Dst Port,Protocol,Timestamp,Flow Duration,"
        + ",".join(CIC_FEATURES[1:6])
        + ",Label"
    )
    lines, expect = [header], []
    for i, num in enumerate(TRICKY_NUMBERS):
        a, b = addrs[i % len(addrs)], addrs[(i * 7 + 3) % len(addrs)]
        port = ["80", "65535", "65536", "-1", "Infinity", "", "443.0"][i % 7]
        lines.append(
            f"{a},{b},{port},{i},6,2020-01-0{1 + i % 9} 10:00:00.{i:06d},{num},"
            f"{num},1,2,3,4,lab {i % 3}"
        )
        expect.append((a, b, port, num))
        if i % 5 == 0:
            lines.append("")  # blank lines are skipped
    f = tmp_path / "t.csv"
    f.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    b = FlowBatch.concat(list(read_flow_csv(f)))
    assert len(b) == len(TRICKY_NUMBERS)
    got_dur = b["Flow Duration"].tolist()
    want_dur = [_reference_float(n) for _, _, _, n in expect]
    for num, g, w in zip(TRICKY_NUMBERS, got_dur, want_dur, strict=True):
        assert (np.isnan(g) and np.isnan(w)) or g == w, (num, g, w)
    assert np.array_equal(b["Tot Fwd Pkts"], b["Flow Duration"], equal_nan=True)
    assert b["src_ip"].tobytes() == str_to_addrs([a for a, _, _, _ in expect]).tobytes()
    assert b["dst_ip"].tobytes() == str_to_addrs([d for _, d, _, _ in expect]).tobytes()
    ports = [
        int(v) if np.isfinite(v) and 0 <= v <= 65535 else 0
        for v in (_reference_float(p) for _, _, p, _ in expect)
    ]
    assert b["src_port"].tolist() == ports
    assert b["dst_port"].tolist() == list(range(len(TRICKY_NUMBERS)))
    assert b["label"].tolist() == [f"lab {i % 3}" for i in range(len(TRICKY_NUMBERS))]
    ts = [
        datetime(2020, 1, 1 + i % 9, 10, tzinfo=UTC).timestamp() + i / 1e6
        for i in range(len(TRICKY_NUMBERS))
    ]
    assert b["first_ts"].tolist() == pytest.approx(ts, abs=1e-6)


def test_quoted_fields_switch_to_the_csv_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows before the first quote are read by the compiled path, the rest by csv."""
    import netmon_exporter.flows.flow_csv as fc

    monkeypatch.setattr(fc, "_BLOCK_BYTES", 200)
    header = "Src IP,Dst IP,Timestamp," + ",".join(CIC_FEATURES[:6]) + ",Label,dns_qname"
    rows = [f"10.0.0.{i},10.0.1.{i},,{i},1,2,3,4,5,plain{i},q{i}.example" for i in range(30)]
    rows[20] = '10.0.0.20,10.0.1.20,,20,1,2,3,4,5,"a,b ""c""\nd",x.example'
    rows[25] = '10.0.0.25,10.0.1.25,,25,1,2,3,4,5,"Infinity",' + '""'
    f = tmp_path / "q.csv"
    f.write_text(header + "\n" + "\n".join(rows) + "\n")
    b = FlowBatch.concat(list(read_flow_csv(f)))
    assert len(b) == 30
    assert b["Flow Duration"].tolist() == list(range(30))
    assert addrs_to_str(b["src_ip"]) == [f"10.0.0.{i}" for i in range(30)]
    labels = b["label"].tolist()
    assert labels[19] == "plain19" and labels[20] == 'a,b "c"\nd' and labels[25] == "Infinity"
    assert b["dns_qname"][0] == "q0.example" and b["dns_qname"][25] == ""
    assert np.isnan(b["first_ts"]).all()


def test_malformed_quoted_csv_names_the_line(tmp_path: Path) -> None:
    import csv as csv_module

    header = "Src IP,Dst IP," + ",".join(CIC_FEATURES[:6]) + ",Label"
    f = tmp_path / "m.csv"
    f.write_text(
        header
        + "\n10.0.0.1,10.0.0.2,1,2,3,4,5,6,ok\n"
        + '1.1.1.1,2.2.2.2,1,2,3,4,5,6,"'
        + "x" * 50
        + '"\n'
    )
    old = csv_module.field_size_limit(30)  # a field too large is a csv.Error
    try:
        with pytest.raises(FlowCsvError, match="line 3"):
            list(read_flow_csv(f))
    finally:
        csv_module.field_size_limit(old)


def _fixed_reference(values: np.ndarray) -> np.ndarray:
    """What csv_format._fixed wrote before its bulk path: every cell through csv_cell."""
    from netmon_exporter.text_safety import csv_cell

    n = len(values)
    cells = [(i, v) for i, v in enumerate(values) if v]
    if not cells:
        return np.zeros((n, 1), dtype=np.uint8)
    enc = [
        (i, csv_format._csv_field(csv_cell(v)).encode("utf-8", "backslashreplace"))
        for i, v in cells
    ]
    out = np.zeros((n, max(len(e) for _, e in enc)), dtype=np.uint8)
    for i, e in enc:
        out[i, : len(e)] = np.frombuffer(e, dtype=np.uint8)
    return out


def _trimmed(m: np.ndarray) -> list[bytes]:
    return [bytes(row).rstrip(b"\0") for row in m]


_TRICKY = [
    "www.example.org",
    "API.Example.COM",
    "_dmarc.example.com",
    "-leading.dash",
    "-1",
    "+3e2",
    "=cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "a,b",
    'say "hi"',
    "new\nline",
    "tab\there",
    "nul\x00inside",
    "trailing nul\x00",
    "\x00",
    "back\\slash",
    "caf\u00e9.example",
    "\uff1dfullwidth",
    "emoji\U0001f600.test",
    "esc\x1b[31mred",
    "x" * 255,
    "y" * 300,
    " spaced",
    "",
    "ok-name_1.example",
]


@pytest.mark.parametrize("rotate", range(4))
def test_text_cells_are_written_as_cell_by_cell_cleaning_writes_them(rotate: int) -> None:
    values = np.array(_TRICKY[rotate:] + _TRICKY[:rotate] + [None, b"raw\xffbytes"], dtype=object)
    got, want = csv_format._fixed(values), _fixed_reference(values)
    assert _trimmed(got) == _trimmed(want)
    plain = np.array(["a.example", "b-1.example", "C_2"], dtype=object)  # the bulk path alone
    assert _trimmed(csv_format._fixed(plain)) == [b"a.example", b"b-1.example", b"C_2"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.text(max_size=40), st.from_regex(r"[a-z0-9._-]{1,30}", fullmatch=True)))
)
def test_any_text_cells_are_written_as_cell_by_cell_cleaning_writes_them(cells: list[str]) -> None:
    values = np.array(cells, dtype=object)
    assert _trimmed(csv_format._fixed(values)) == _trimmed(_fixed_reference(values))
