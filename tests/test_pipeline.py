"""process_file / finish_carry: counts, failures with reasons, carry, CSV input, memory."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter.flow_schema import CIC_FEATURES
from netmon_exporter.metrics import PROTOCOLS, SKIP_REASONS
from netmon_exporter.pipeline import CaptureFormatError, FlowSettings, finish_carry, process_file

DATA = Path(__file__).parent / "data" / "pcaps"
ROOT = Path(__file__).resolve().parents[1]


def test_counts_by_protocol_and_skip_reason() -> None:
    res = process_file(DATA / "pppoe.pcap", FlowSettings())
    assert res.kind == "pcap" and res.size_bytes == (DATA / "pppoe.pcap").stat().st_size
    assert set(res.packets_by_protocol) == set(PROTOCOLS)
    assert set(res.skipped_by_reason) == set(SKIP_REASONS)
    assert sum(res.packets_by_protocol.values()) == 25
    assert res.skipped_by_reason["non_ip"] == 40
    assert res.first_ts is not None and res.last_ts is not None and res.first_ts <= res.last_ts
    n = res.flows["Tot Fwd Pkts"] + res.flows["Tot Bwd Pkts"]
    assert int(n.sum()) == 25 and res.flow_count == len(res.flows)


def test_icmpv6_and_fragments_are_counted() -> None:
    res = process_file(DATA / "icmp6.pcap", FlowSettings())
    assert res.packets_by_protocol["icmpv6"] == 49
    frag = process_file(DATA / "ipv6-fragmented-dns.pcap", FlowSettings())
    assert frag.ip_fragments == 4 and frag.packets_by_protocol["udp"] == 8


def test_truncated_last_record_keeps_the_rest(tmp_path: Path) -> None:
    data = (DATA / "tcp-handshake-reorder.pcap").read_bytes()
    f = tmp_path / "cut.pcap"
    f.write_bytes(data[:-10])
    res = process_file(f, FlowSettings())
    assert res.skipped_by_reason["truncated"] == 1
    assert int((res.flows["Tot Fwd Pkts"] + res.flows["Tot Bwd Pkts"]).sum()) == 13


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"not a capture at all", "format"),
        (b"\xd4\xc3\xb2\xa1" + bytes(20) + b"\x01\x00\x00\x00\x00", "truncated"),
        (b"\x1f\x8b\x09\x00" + bytes(20), "format"),
        (gzip.compress(b"\xd4\xc3\xb2\xa1" + bytes(40))[:-12], "truncated"),
    ],
)
def test_bad_files_fail_with_a_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    f = tmp_path / "bad.pcap"
    f.write_bytes(data)
    with pytest.raises(CaptureFormatError) as exc:
        process_file(f, FlowSettings(), csv_dir=tmp_path)
    assert exc.value.reason == reason
    assert [p.name for p in tmp_path.iterdir()] == ["bad.pcap"]  # no CSV left behind


def test_cut_gzip_keeps_the_packets_before_the_cut(tmp_path: Path) -> None:
    data = gzip.compress((DATA / "tcp-missing-syn.pcap").read_bytes())
    f = tmp_path / "cut.pcap.gz"
    f.write_bytes(data[: len(data) // 2])
    res = process_file(f, FlowSettings())
    assert res.skipped_by_reason["truncated"] == 1
    assert 0 < sum(res.packets_by_protocol.values()) < 21


def test_missing_file_and_size_limit(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError) as exc:
        process_file(tmp_path / "nope.pcap", FlowSettings())
    assert exc.value.reason == "io"
    with pytest.raises(CaptureFormatError) as exc:
        process_file(DATA / "icmp6.pcap", FlowSettings(max_file_bytes=100))
    assert exc.value.reason == "too_large"


def test_gzip_gives_the_same_flows(tmp_path: Path) -> None:
    src = DATA / "dns-edns-ecs.pcap"
    gz = tmp_path / "d.pcap.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    a = process_file(src, FlowSettings()).flows
    b = process_file(gz, FlowSettings()).flows
    assert len(a) == len(b) == 69
    for name in CIC_FEATURES:
        np.testing.assert_array_equal(a[name], b[name])


def test_carry_holds_open_flows_until_finished() -> None:
    path = DATA / "tcp-retransmit-timeout.pcapng"
    s = FlowSettings(idle_timeout_seconds=600)
    res = process_file(path, s, final=False)
    assert len(res.flows) == 0 and res.carry
    ended = finish_carry(res.carry, s)
    assert len(ended) == 1 and ended["Tot Fwd Pkts"][0] == 2
    # carrying off: everything ends with the file
    res = process_file(
        path, FlowSettings(idle_timeout_seconds=600, carry_across_files=False), final=False
    )
    assert len(res.flows) == 1 and res.carry is None


def test_bad_carry_is_rejected() -> None:
    with pytest.raises(CaptureFormatError) as exc:
        process_file(DATA / "icmp.pcap", FlowSettings(), carry=b"garbage")
    assert exc.value.reason == "internal"


def test_flow_csv_input(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    first = process_file(DATA / "dns-edns-ecs.pcap", FlowSettings(), csv_dir=out)
    res = process_file(Path(first.csv_path), FlowSettings())
    assert res.kind == "csv" and len(res.flows) == 69
    np.testing.assert_allclose(res.flows["Flow Duration"], first.flows["Flow Duration"])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_stays_bounded_on_a_large_capture(tmp_path: Path) -> None:
    big = tmp_path / "big.pcap"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "synth.py"), str(big), "--packets", "400000"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still counts the parent (pytest)
    script = (
        "import sys; from pathlib import Path;"
        "from netmon_exporter.pipeline import FlowSettings, process_file;"
        "r = process_file(Path(sys.argv[1]), FlowSettings(), csv_dir=Path(sys.argv[2]),"
        " collect=False);"
        "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0];"
        "print(r.packets, r.flow_count, hwm)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(big), str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    packets, flows, peak_kb = map(int, out.stdout.split())
    assert packets > 390_000 and flows > 30_000
    # the capture is ~150 MB: the process must hold neither it nor its flows in memory
    assert peak_kb < 300_000, peak_kb


def test_reading_ahead_finds_the_same_flows(tmp_path: Path) -> None:
    """The flows command reads ahead on a second thread: every flow of every test capture
    (and of a synthetic one of many chunks, with interim records) is the same, bit for bit,
    and so is the CSV."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_synth", Path(__file__).resolve().parents[1] / "bench" / "synth.py"
    )
    assert spec and spec.loader
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    big = tmp_path / "synth.pcap"
    synth.write_pcap(big, 30_000, seed=9)
    for path in [*sorted(DATA.glob("*.pcap*")), big]:
        got = []
        for ahead in (False, True):
            settings = FlowSettings(read_ahead=ahead, interim_seconds=10.0)
            res = process_file(path, settings, csv_path=tmp_path / f"{ahead}.csv")
            got.append((res, (tmp_path / f"{ahead}.csv").read_bytes()))
        (a, csv_a), (b, csv_b) = got
        assert csv_a == csv_b and a.flow_count == b.flow_count, path.name
        assert a.packets_by_protocol == b.packets_by_protocol, path.name
        assert list(a.flows.columns) == list(b.flows.columns)
        for name in a.flows.columns:
            x, y = np.asarray(a.flows[name]), np.asarray(b.flows[name])
            if x.dtype == object:
                assert x.tolist() == y.tolist(), (path.name, name)
            else:
                assert x.tobytes() == y.tobytes(), (path.name, name)
    assert len(got[0][0].flows) > 1000
