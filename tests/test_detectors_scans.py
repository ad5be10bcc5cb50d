"""Port scans and address sweeps: probe kinds, tiers, distributed views, P2P and pollers.

Unit tests on hand-built flow batches, then every hard scan case of
``tools/cases_scans.py`` through the real flow engine, and every registered benign
case (all modules) with the shipped config: no scan or brute-force finding.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter.config import DetectorsConfig
from netmon_exporter.detectors.address_sweep import AddressSweepDetector
from netmon_exporter.detectors.base import network_of
from netmon_exporter.detectors.port_scan import PortScanDetector
from netmon_exporter.detectors.scan_probes import ContactStore, classify, service_name
from netmon_exporter.flow_schema import FlowBatch, addrs_to_str, str_to_addrs
from netmon_exporter.tools.evaluate import analyse_capture, matches
from netmon_exporter.tools.evaluate_suites import found, run_cases
from netmon_exporter.tools.suites import cases, load_cases
from tests.helpers import hard_case_found

from .test_detectors import CFG, HALF_OPEN, T0, UNANSWERED, flows, run

MINE = ("port_scan", "address_sweep", "brute_force")
# A probe without SYN, answered by a reset (a closed port).
STEALTH = {"fwd": 1, "bwd": 1, "fwd_bytes": 0, "bwd_bytes": 0, "fwd_syn": 0, "bwd_syn": 0}
STEALTH_RST = {**STEALTH, "bwd_rst": 1}

# numba's JIT only: what the install step compiled into its cache (the fallback of the
# kernels built ahead of time, tests/test_compiled.py)
_JIT = {**os.environ, "NETMON_KERNELS": "jit"}


def with_cols(batch: FlowBatch, **cols: object) -> FlowBatch:
    """Add feature columns the ``flows`` helper does not set (flag totals, lengths)."""
    n = len(batch)
    extra = {
        k.replace("_", " "): np.broadcast_to(np.asarray(v, float), (n,)).copy()
        for k, v in cols.items()
    }
    return FlowBatch({**batch.columns, **extra})


def probes(src: str, dst: str, ports, start: float = T0, **shape: object) -> list[dict]:
    return [
        {**shape, "src": src, "dst": dst, "dport": int(p), "sport": 45000, "ts": start + 0.1 * i}
        for i, p in enumerate(ports)
    ]


# ------------------------------------------------------------------ probe kinds


@pytest.mark.parametrize(
    ("fin", "psh", "kind"),
    [(1, 0, "fin"), (1, 1, "xmas"), (0, 0, "null/ack")],
)
def test_probes_without_syn_count(fin, psh, kind):
    batch = with_cols(
        flows(probes("10.0.0.66", "10.0.0.9", range(1, 21), **STEALTH_RST)),
        FIN_Flag_Cnt=fin,
        PSH_Flag_Cnt=psh,
    )
    (d,) = run(PortScanDetector(CFG.port_scan), batch)
    assert (d.source, d.target) == ("10.0.0.66", "10.0.0.9")
    assert d.evidence["probe_kinds"] == {kind: 20} and d.evidence["reset"] == 20


def test_probes_carrying_data_still_count():
    """Guards docs/detectors.md: "SYNs and probes without SYN may carry data"."""
    # nmap --data-length N: every SYN (closed ports reset it) or FIN carries N bytes.
    syn_data = {**HALF_OPEN, "fwd_bytes": 40}
    fin_data = {**STEALTH_RST, "fwd_bytes": 40}
    for shape, kind in ((syn_data, "syn"), (fin_data, "fin")):
        batch = with_cols(
            flows(probes("10.0.0.66", "10.0.0.9", range(1, 21), **shape)),
            FIN_Flag_Cnt=int(kind == "fin"),
            PSH_Flag_Cnt=0,
        )
        (d,) = run(PortScanDetector(CFG.port_scan), batch)
        assert d.evidence["probe_kinds"] == {kind: 20}, kind


def test_tcp_fast_open_and_answered_data_are_not_probes():
    # TCP Fast Open: data in the SYN, the server's SYN-ACK, the client's ACK and more:
    # a connection, not a half-open probe. A client's FIN with data that the server
    # answers with data (a connection seen from its middle) is no probe either.
    tfo = {"fwd": 3, "bwd": 2, "fwd_bytes": 300, "fwd_syn": 1, "bwd_syn": 1}
    mid = {**STEALTH_RST, "fwd_bytes": 40, "bwd": 2, "bwd_bytes": 900}
    for shape in (tfo, mid):
        batch = with_cols(
            flows(probes("10.0.0.66", "10.0.0.9", range(1, 21), **shape)),
            FIN_Flag_Cnt=1,
            PSH_Flag_Cnt=0,
        )
        assert classify(batch)["kinds"].sum() == 0
        assert run(PortScanDetector(CFG.port_scan), batch) == []


def test_unanswered_stealth_probes_and_connect_scans_count():
    unanswered = {**STEALTH, "bwd": 0, "fwd": 2}
    connect_reset = {"fwd": 3, "bwd": 1, "fwd_bytes": 0, "bwd_bytes": 0, "fwd_rst": 1}
    batch = flows(
        probes("10.0.0.66", "10.0.0.9", range(1, 11), **unanswered)
        + probes("10.0.0.66", "10.0.0.9", range(11, 21), **connect_reset)
    )
    (d,) = run(PortScanDetector(CFG.port_scan), batch)
    assert d.evidence["distinct_ports"] == 20 and d.evidence["unanswered"] == 10


def test_a_servers_late_packets_to_client_ports_are_not_a_scan():
    """Guards docs/detectors.md: "a server's tail goes *from* its service port *to* the client's higher, unprivileged port"."""
    # After the idle timeout a server's FIN or keepalive is a flow of its own, from its
    # service port to the client's high port, answered by a reset: not a probe.
    tails = [
        {**STEALTH_RST, "src": "10.0.0.9", "dst": "10.0.0.66", "sport": 443, "dport": 50000 + i}
        for i in range(30)
    ]
    assert run(PortScanDetector(CFG.port_scan), with_cols(flows(tails), FIN_Flag_Cnt=1)) == []
    assert classify(flows(tails))["kinds"].sum() == 0


def test_traceroute_ports_are_not_a_udp_scan():
    """Guards docs/detectors.md: "except ports 33434–33534, where traceroute and mtr send one probe per hop"."""
    udp = {"proto": 17, "fwd": 1, "bwd": 0, "fwd_syn": 0, "bwd_syn": 0, "fwd_bytes": 32}
    trace = flows(probes("10.0.0.66", "10.0.0.9", range(33434, 33474), **udp))
    assert run(PortScanDetector(CFG.port_scan), trace) == []
    (d,) = run(
        PortScanDetector(CFG.port_scan), flows(probes("10.0.0.66", "10.0.0.9", range(1, 21), **udp))
    )
    assert d.evidence["probe_kinds"] == {"udp": 20} and d.evidence["sample_ports"][0] == "udp/1"


def test_completed_sessions_and_multicast_are_not_probes():
    done = flows(probes("10.0.0.66", "10.0.0.9", range(1, 40)))  # completed, with data
    assert classify(done)["kinds"].sum() == 0
    mcast = flows(
        [
            {**UNANSWERED, "proto": 17, "fwd_syn": 0, "dst": "239.1.1.1", "dport": p}
            for p in range(1, 40)
        ]
    )
    assert classify(mcast)["kinds"].sum() == 0


# ------------------------------------------------------------------ tiers


def test_slow_scan_found_by_the_slow_tier_only():
    det = PortScanDetector(CFG.port_scan)
    found = []
    for k in range(40):  # one port every 60 s: 5 ports per 5 minutes, under the fast tier
        start = T0 + 60 * k
        found += run(det, flows([{**HALF_OPEN, "dport": 100 + k, "ts": start + 10}]), start)
        if found:
            break
    (d,) = found
    assert d.evidence["horizon_seconds"] == CFG.port_scan.slow_horizon_seconds
    assert d.evidence["distinct_ports"] == CFG.port_scan.slow_min_ports == d.evidence["threshold"]


def test_bursts_kept_under_the_fast_tier_add_up():
    det = PortScanDetector(CFG.port_scan)
    burst = lambda start, first: flows(  # noqa: E731
        [{**HALF_OPEN, "dport": first + i, "ts": start + 0.1 * i} for i in range(14)]
    )
    assert run(det, burst(T0, 1), T0) == []
    for k in range(1, 5):
        assert run(det, flows([]), T0 + 60 * k) == []
    (d,) = run(det, burst(T0 + 330, 101), T0 + 300)
    assert d.evidence["distinct_ports"] == 28 and d.evidence["probes_in_window"] == 14


def test_contact_stores_hold_narrow_counters():
    """A scan detector's store holds up to a million contacts: counters are int32 and kind
    masks int16 (74 and 86 bytes a row with the keys and times, not 96 and 112)."""
    port, sweep = PortScanDetector(CFG.port_scan), AddressSweepDetector(CFG.address_sweep)
    batch = flows(
        probes("192.0.2.7", "10.0.0.99", range(1, 40), **HALF_OPEN)
        + [{**HALF_OPEN, "dst": f"10.0.1.{i}", "dport": 22, "ts": T0 + i} for i in range(40)]
    )
    assert run(port, batch, T0) and run(sweep, batch, T0)  # a port scan, a sweep
    later = flows(probes("192.0.2.7", "10.0.0.99", range(30, 90), T0 + 60, **HALF_OPEN))
    for det, width in ((port, 74), (sweep, 86)):
        for merge_kernel_rows in (10**9, 0):  # merged by sorting, then in one compiled pass
            det.store.merge_kernel_rows = merge_kernel_rows
            if merge_kernel_rows == 0:
                run(det, later, T0 + 60)
            rows = det.store.rows
            assert len(rows["last"]) > 30
            assert sum(col.itemsize for col in rows.values()) == width, {
                k: v.dtype for k, v in rows.items()
            }


@pytest.mark.parametrize("merge_kernel_rows", [10**9, 0])
def test_contact_counters_saturate_instead_of_wrapping(merge_kernel_rows: int) -> None:
    """A careless admin's day-long horizon over 1-s windows, each with a flood of one
    contact: the int32 counters stop at their maximum, never wrap to a negative count
    (which would hide the contact from `probes > 0`), in either merge."""
    from netmon_exporter.detectors.scan_probes import COUNT

    top = np.iinfo(COUNT).max
    store = ContactStore(86400, 10, sums=("n",))
    store.merge_kernel_rows = merge_kernel_rows

    def contact(n: list[int], t: float) -> dict[str, np.ndarray]:
        k = len(n)
        return {
            "src": str_to_addrs(["192.0.2.7"] * k),
            "dst": str_to_addrs(["10.0.0.1"] * k),
            "svc": np.full(k, 22),
            "first": np.full(k, t),
            "last": np.full(k, t),
            "n": np.array(n, dtype=COUNT),
        }

    rows, _ = store.update(contact([top - 10, 7], T0), T0)  # one window's duplicates
    assert rows["n"].dtype == COUNT and rows["n"].tolist() == [top - 3]
    rows, _ = store.update(contact([5, 9], T0 + 1), T0 + 1)  # the next window's
    assert rows["n"].dtype == COUNT and rows["n"].tolist() == [top]
    rows, _ = store.update(contact([1], T0 + 2), T0 + 2)
    assert rows["n"].tolist() == [top]


def _random_contacts(
    rng: np.random.Generator, w: int, pool_src: np.ndarray, pool_dst: np.ndarray, services: int
) -> dict[str, np.ndarray]:
    """Up to 300 contacts of window ``w`` between addresses of the pools (repeats within
    the window and across windows), services from -3 (negative too) up."""
    n = int(rng.integers(0, 300))
    ts = 1000.0 + 60 * w + rng.uniform(0, 60, n)
    return {
        "src": pool_src[rng.integers(0, len(pool_src), n)],
        "dst": pool_dst[rng.integers(0, len(pool_dst), n)],
        "svc": rng.integers(-3, services, n),
        "first": ts,
        "last": ts + rng.uniform(0, 5, n),
    }


@pytest.mark.parametrize("seed", range(6))
def test_contact_store_one_pass_merge_equals_sorting_everything_again(seed: int) -> None:
    """Windows of random contacts (repeats within and across windows, IPv4 and IPv6,
    negative and positive services, expiry and the row cap) through a store merged in
    one compiled pass and one merged by sorting store and new rows together: exactly the
    same rows, order, dtypes and counters every window."""
    rng = np.random.default_rng(seed)
    args = dict(sums=("n",), maxes=("content",), ors=("kinds",))
    one_pass, sorting = ContactStore(300, 400, **args), ContactStore(300, 400, **args)
    one_pass.merge_kernel_rows, sorting.merge_kernel_rows = 0, 10**9
    pool_src = str_to_addrs([f"10.0.{i // 250}.{i % 250}" for i in range(60)] + ["2001:db8::1"])
    pool_dst = str_to_addrs([f"192.168.1.{i}" for i in range(40)] + ["2001:db8::ff", "::1"])
    for w in range(12):
        new = _random_contacts(rng, w, pool_src, pool_dst, 40)
        n = len(new["last"])
        new.update(
            n=rng.integers(1, 4, n),
            content=rng.uniform(0, 1e6, n),
            kinds=rng.choice([1, 2, 4, 32], n),
        )
        now = 1060.0 + 60 * w
        want, want_touched = sorting.update(new, now)
        got, touched = one_pass.update(new, now)
        assert list(got) == list(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), (w, k)
        assert np.array_equal(touched, want_touched)
    assert 0 < len(one_pass) <= 400


def test_the_warm_up_compiles_the_merge_a_large_store_uses() -> None:
    """`python -m netmon_exporter.ingest.warm_pipeline` (run by `make`) compiles the very
    specialization of the contact merge that a store past the threshold runs (read-only
    store columns, writable new rows), and of the hash of keys of many rows: the
    daemon's first scan-heavy window must not compile them while holding the GIL. In a
    fresh process: nothing else compiled them."""
    import subprocess
    import sys

    code = """
import numpy as np
from netmon_exporter.ingest.warm_pipeline import warm_detectors
from netmon_exporter.detectors.contact_merge import merge_column, merge_positions
from netmon_exporter.detectors.scan_probes import COUNT, KINDS, ContactStore
from netmon_exporter.flow_schema import str_to_addrs
warm_detectors()
compiled = len(merge_positions.signatures)
columns = list(merge_column.signatures)
store = ContactStore(600, 10**6, sums=("n",), maxes=("content",), ors=("kinds",))
store.merge_kernel_rows = 0
for w in range(3):
    n = 500
    new = {
        "src": str_to_addrs([f"10.1.{w}.{i % 250}" for i in range(n)]),
        "dst": str_to_addrs(["10.0.0.1"] * n),
        "svc": np.arange(n),
        "first": np.full(n, 60.0 * w),
        "last": np.full(n, 60.0 * w),
        "n": np.ones(n, dtype=COUNT),
        "content": np.zeros(n),
        "kinds": np.ones(n, dtype=KINDS),
    }
    store.update(new, 60.0 * w + 60)
assert compiled >= 1 and len(merge_positions.signatures) == compiled, merge_positions.signatures
assert len(columns) >= 2 and list(merge_column.signatures) == columns, merge_column.signatures
from netmon_exporter.detectors import scan_probes
from netmon_exporter.detectors.hash_kernels import mix_first, mix_next
hashed = list(mix_first.signatures) + list(mix_next.signatures)
n = scan_probes.HASH_KERNEL_ROWS
addrs = str_to_addrs(["10.0.0.1"] * n)
scan_probes.group_ids(addrs, np.arange(n), np.ones(n, np.uint16))
addrs.flags.writeable = False  # a store's columns
scan_probes.group_ids(np.arange(n), addrs)
assert hashed and list(mix_first.signatures) + list(mix_next.signatures) == hashed, hashed
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=_JIT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_contact_store_is_bounded_and_forgets_beyond_its_horizon():
    store = ContactStore(600, 1000, sums=("n",))
    for w in range(5):
        n = 800
        src = str_to_addrs([f"10.1.{w}.{i % 250}" for i in range(n)])
        new = {
            "src": src,
            "dst": str_to_addrs(["10.0.0.1"] * n),
            "svc": np.arange(n),
            "first": np.full(n, T0 + 60 * w),
            "last": np.full(n, T0 + 60 * w),
            "n": np.ones(n, dtype=np.int64),
        }
        rows, touched = store.update(new, T0 + 60 * w + 60)
        assert len(store) <= 1000 and touched.sum() <= 800
    assert rows["last"].min() >= T0 + 60 * 3  # the least recently seen went first
    store.update({k: v[:0] for k, v in new.items()}, T0 + 60 * 4 + 700)
    assert len(store) == 0


# ------------------------------------------------------------------ distributed


def test_distributed_scan_reports_many_and_the_top_sources():
    rows = []
    for k in range(25):
        rows += probes(
            f"198.51.100.{k + 1}", "10.0.0.9", range(1 + 12 * k, 13 + 12 * k), **HALF_OPEN
        )
    (d,) = run(PortScanDetector(CFG.port_scan), flows(rows))
    assert (d.source, d.target) == ("many", "10.0.0.9")
    assert d.evidence["sources"] == 25 and d.evidence["distinct_ports"] == 300
    assert len(d.evidence["top_sources"]) == 5 and d.evidence["top_sources"][0]["count"] == 12


def test_background_noise_from_many_sources_is_not_a_distributed_scan():
    one_port_each = [
        {**HALF_OPEN, "src": f"198.51.100.{k}", "dst": "10.0.0.9", "dport": 1000 + k}
        for k in range(1, 60)
    ]
    few_sources = []
    for k in range(4):
        few_sources += probes(
            f"198.51.100.{k + 1}", "10.0.0.9", range(1 + 12 * k, 13 + 12 * k), **HALF_OPEN
        )
    assert run(PortScanDetector(CFG.port_scan), flows(one_port_each)) == []
    assert run(PortScanDetector(CFG.port_scan), flows(few_sources)) == []


def test_distributed_sweep_of_a_network():
    rows = [
        {**UNANSWERED, "src": f"198.51.100.{k + 1}", "dst": f"10.9.8.{9 * k + j + 1}", "dport": 445}
        for k in range(25)
        for j in range(9)
    ]
    (d,) = run(AddressSweepDetector(CFG.address_sweep), flows(rows))
    assert (d.source, d.target) == ("many", "10.9.8.0/24 tcp/445")
    assert d.evidence["sources"] == 25 and d.evidence["distinct_hosts"] == 225


def test_many_clients_reaching_the_same_live_servers_are_not_a_distributed_sweep():
    """Guards docs/detectors.md: "only hosts that never answered a source count toward a distributed sweep"."""
    echo = {"proto": 1, "dport": 0x0800, "sport": 0, "itype": 8, "fwd": 1, "bwd": 1}
    rows = [
        {
            **echo,
            "fwd_syn": 0,
            "bwd_syn": 0,
            "src": f"10.0.{k}.5",
            "dst": f"10.9.8.{1 + (k + j) % 40}",
        }
        for k in range(100)
        for j in range(3)
    ]
    assert run(AddressSweepDetector(CFG.address_sweep), flows(rows)) == []


def test_network_of():
    nets = network_of(str_to_addrs(["10.1.2.3", "2001:db8:1:2:3:4:5:6"]))
    assert addrs_to_str(nets) == ["10.1.2.0", "2001:db8:1:2::"]


# ------------------------------------------------------------------ ordinary traffic


def _failed(src: str, hosts: list[str], port: int) -> list[dict]:
    return [
        {**UNANSWERED, "src": src, "dst": h, "dport": port, "ts": T0 + i}
        for i, h in enumerate(hosts)
    ]


def test_peer_service_with_content_peers_is_not_a_sweep_judged_per_service():
    """Guards docs/detectors.md: "with the source *on that same service*, in either direction"."""
    hosts = [f"203.0.113.{i}" for i in range(1, 41)]
    peers = [f"198.51.100.{i}" for i in range(1, 9)]
    content = [
        {"src": "10.0.0.15", "dst": p, "dport": 7680, "bwd_bytes": 300_000, "ts": T0 + 50}
        for p in peers
    ]
    do = flows(_failed("10.0.0.15", hosts, 7680) + content)
    assert run(AddressSweepDetector(CFG.address_sweep), do) == []
    # content on another service buys nothing for this one
    elsewhere = flows(_failed("10.0.0.15", hosts, 7680) + [{**c, "dport": 8080} for c in content])
    (d,) = run(AddressSweepDetector(CFG.address_sweep), elsewhere)
    assert d.target == "tcp/7680"
    # nor does it for a privileged service (a worm that also fetches from the hosts)
    smb = flows(_failed("10.0.0.15", hosts, 445) + [{**c, "dport": 445} for c in content])
    (d,) = run(AddressSweepDetector(CFG.address_sweep), smb)
    assert d.target == "tcp/445"


def _echo(src: str, dst: str, ts: float, answered: bool = True) -> dict:
    return {
        "proto": 1,
        "src": src,
        "dst": dst,
        "dport": 0x0800,
        "sport": 0,
        "itype": 8,
        "fwd": 1,
        "bwd": int(answered),
        "fwd_syn": 0,
        "bwd_syn": 0,
        "ts": ts,
        "dur": 0.001,
    }


def test_a_poller_coming_back_to_live_hosts_is_not_a_sweep():
    det = AddressSweepDetector(CFG.address_sweep)
    hosts = [f"10.7.0.{i}" for i in range(1, 101)]
    for w in range(12):  # every host pinged every 30 s, 97 % answer
        start = T0 + 60 * w
        batch = flows(
            [
                _echo("10.0.0.5", h, start + 30 * r + i * 0.25, answered=i % 33 != 0)
                for r in range(2)
                for i, h in enumerate(hosts)
            ]
        )
        assert run(det, batch, start) == [], w


def test_a_revisit_is_a_new_contact_not_a_long_retransmitting_flow():
    open_port = {"fwd": 2, "bwd": 1, "fwd_bytes": 0, "bwd_bytes": 0, "bwd_syn": 1, "fwd_rst": 1}

    def windows(rows_for):
        det = AddressSweepDetector(CFG.address_sweep)
        out = []
        for w in range(8):
            out += run(det, flows(rows_for(T0 + 60 * w)), T0 + 60 * w)
        return out

    hosts = [f"10.7.0.{i}" for i in range(1, 31)]
    # one long flow per host (SYN retried for 40 s, then answered): one contact each
    once = windows(
        lambda start: (
            [
                {**open_port, "src": "192.0.2.9", "dst": h, "dport": 22, "ts": T0 + i, "dur": 40}
                for i, h in enumerate(hosts)
            ]
            if start == T0
            else []
        )
    )
    assert [d.target for d in once] == ["tcp/22"]
    # a new connection to each host every 30 s: a poller
    again = windows(
        lambda start: [
            {**open_port, "src": "192.0.2.9", "dst": h, "dport": 22, "ts": start + r * 30 + i * 0.5}
            for r in range(2)
            for i, h in enumerate(hosts)
        ]
    )
    assert again == []


def test_an_unanswered_sweep_is_reported_at_once():
    batch = flows([_echo("10.0.0.66", f"10.7.0.{i}", T0 + i, answered=False) for i in range(1, 31)])
    (d,) = run(AddressSweepDetector(CFG.address_sweep), batch)
    assert d.target == "icmp/echo" and d.evidence["answered"] == 0


def test_slow_sweep_found_by_the_slow_tier():
    det = AddressSweepDetector(CFG.address_sweep)
    found = []
    for k in range(60):  # one host every 20 s: 15 per 5 minutes
        start = T0 + 60 * k
        batch = flows(
            [
                {
                    **UNANSWERED,
                    "src": "192.0.2.9",
                    "dst": f"10.7.{k}.{j + 1}",
                    "dport": 3389,
                    "ts": start + 20 * j,
                }
                for j in range(3)
            ]
        )
        found = run(det, batch, start)
        if found:
            break
    (d,) = found
    assert d.evidence["horizon_seconds"] == CFG.address_sweep.slow_horizon_seconds
    assert d.evidence["distinct_hosts"] >= CFG.address_sweep.slow_min_hosts


def _recursion(
    resolver: str, unanswered: int, start: float, clients: int = 5, answered: int = 300
) -> FlowBatch:
    """Clients asking ``resolver``; it asks ``answered`` authoritative servers, and
    ``unanswered`` more (new ones each call) in vain: down, lame or rate limiting."""
    asked = {"proto": 17, "fwd": 1, "bwd": 1, "fwd_bytes": 40, "bwd_bytes": 120}
    lost = {"proto": 17, "fwd": 1, "bwd": 0, "fwd_bytes": 40, "bwd_bytes": 0}
    udp = {"fwd_syn": 0, "bwd_syn": 0, "dport": 53, "dur": 0.05}
    rows = [
        {**asked, **udp, "src": f"10.0.1.{c + 1}", "dst": resolver, "ts": start + c}
        for c in range(clients)
    ]
    first = int(start - T0) // 60 * 10
    rows += [  # other servers each minute: names of other zones
        {
            **asked,
            **udp,
            "src": resolver,
            "dst": f"198.{first}.{k // 200}.{k % 200 + 1}",
            "ts": start,
        }
        for k in range(answered)
    ]
    rows += [
        {**lost, **udp, "src": resolver, "dst": f"203.{first // 250}.{first % 250}.{k + 1}",
         "ts": start + k}
        for k in range(unanswered)
    ]  # fmt: skip
    return flows(rows)


def _recursing(det: AddressSweepDetector, resolver: str, clients: int) -> list:
    """Ten minutes of recursion, 10 unanswered authoritative servers a minute (more than
    the fast tier's 25 in any 5 minutes), as 1-minute windows; the findings."""
    found = []
    for k in range(10):
        start = T0 + 60 * k
        found += run(det, _recursion(resolver, 10, start, clients), start)
    return found


def test_a_recursive_resolvers_unanswered_queries_are_not_a_sweep():
    """Guards docs/detectors.md: "the authoritative servers it queries on port 53 while"."""
    # the resolver rule alone (its answered queries would also make it a client of
    # port 53 by client_min_success_ratio, which a resolver whose IPv6 is broken, half
    # of its queries lost, would not be)
    cfg = dataclasses.replace(CFG.address_sweep, client_min_success_ratio=0)
    assert _recursing(AddressSweepDetector(cfg), "10.0.0.53", 5) == []
    # the same host seen answering fewer clients than resolver_min_clients: a sweep
    few = cfg.resolver_min_clients - 1
    found = _recursing(AddressSweepDetector(cfg), "10.0.0.53", few)
    assert found and {(d.source, d.target) for d in found} == {("10.0.0.53", "udp/53")}
    off = dataclasses.replace(cfg, resolver_min_clients=0)
    assert _recursing(AddressSweepDetector(off), "10.0.0.53", 5)


def test_a_host_answering_dns_for_a_few_clients_may_not_sweep_port_53():
    """Guards docs/detectors.md: "as long as at least `resolver_min_answered_share`"."""
    cfg = dataclasses.replace(CFG.address_sweep, client_min_success_ratio=0)

    def minutes(det: AddressSweepDetector, answered: int, unanswered: int, n: int = 10) -> list:
        found = []
        for k in range(n):
            start = T0 + 60 * k
            batch = _recursion("10.0.0.53", unanswered, start, 5, answered)
            found += run(det, batch, start)
        return found

    # a forwarder (two upstreams answer) sweeping 10 hosts a minute of which none answer
    found = minutes(AddressSweepDetector(cfg), 2, 10)
    assert found and {(d.source, d.target) for d in found} == {("10.0.0.53", "udp/53")}
    # share 0: every resolver's port-53 queries exempt, as before the share
    assert (
        minutes(
            AddressSweepDetector(dataclasses.replace(cfg, resolver_min_answered_share=0)), 2, 10
        )
        == []
    )
    # a resolver whose IPv6 is broken: every dual-stacked server's v6 address unanswered,
    # about as many hosts unanswered as answered; not a sweep
    assert minutes(AddressSweepDetector(cfg), 30, 30) == []
    # ... and just under the share (3 answered of 11), it is
    assert cfg.resolver_min_answered_share == 0.3
    assert minutes(AddressSweepDetector(cfg), 3, 8, 4)
    assert minutes(AddressSweepDetector(cfg), 3, 7, 4) == []


def test_udp53_sweep_from_a_lan_forwarder_is_found(tmp_path: Path):
    """The hard case: a host answering DNS for six neighbours sweeps udp/53 over a /16."""
    r = hard_case_found(tmp_path, "udp53_sweep_from_lan_forwarder")
    assert {d.detector for d in r.detections} == {"address_sweep"}


def test_a_resolvers_uplink_outage_is_not_a_sweep():
    """Within the hour its answered queries outweigh five minutes of nothing answered."""
    cfg = dataclasses.replace(CFG.address_sweep, client_min_success_ratio=0)
    det = AddressSweepDetector(cfg)
    found = []
    for k in range(20):
        start = T0 + 60 * k
        down = 10 <= k < 15  # the uplink is down: 40 servers a minute tried in vain
        found += run(
            det, _recursion("10.0.0.53", 40 if down else 3, start, 5, 0 if down else 100), start
        )
    assert found == []


def test_a_resolver_sweeping_another_service_is_still_a_sweep():
    # the exemption is port 53's: the resolver's host probing tcp/22 on 30 hosts is found
    ssh = flows(
        [
            {**UNANSWERED, "src": "10.0.0.53", "dst": f"10.9.0.{k + 1}", "dport": 22, "ts": T0 + k}
            for k in range(30)
        ]
    )
    both = FlowBatch.concat([_recursion("10.0.0.53", 0, T0), ssh])
    (d,) = run(AddressSweepDetector(CFG.address_sweep), both)
    assert (d.source, d.target) == ("10.0.0.53", "tcp/22")


def _delivering(det: AddressSweepDetector, delivered: int, answered_syns: int = 0) -> list:
    """Ten minutes of a mail server delivering to ``delivered`` new MX hosts a minute
    (completed sessions with a message) and failing on 8 new ones a minute (more than the
    fast tier's 25 in 5 minutes), plus ``answered_syns`` half-open probes a minute that
    hosts answered (a scanner's SYN-ACKs); the findings."""
    sent = {"fwd": 12, "bwd": 10, "fwd_bytes": 9000, "bwd_bytes": 900, "dport": 25}
    found = []
    for k in range(10):
        start = T0 + 60 * k
        rows = [
            {**sent, "src": "10.0.0.25", "dst": f"198.{k}.{j // 200}.{j % 200 + 1}", "ts": start}
            for j in range(delivered)
        ]
        rows += [
            {**UNANSWERED, "src": "10.0.0.25", "dst": f"203.0.{k}.{j + 1}", "dport": 25}
            | {"ts": start + j}
            for j in range(8)
        ]
        rows += [
            {**HALF_OPEN, "src": "10.0.0.25", "dst": f"192.0.{k}.{j + 1}", "dport": 25}
            | {"bwd_syn": 1, "bwd_rst": 0, "fwd_rst": 1, "ts": start}
            for j in range(answered_syns)
        ]
        found += run(det, flows(rows), start)
    return found


def test_a_mail_server_delivering_to_mx_hosts_is_not_a_sweep():
    """Guards docs/detectors.md: "on the swept service (content both ways) reached `client_min_success_ratio` (10)"."""
    ratio = CFG.address_sweep.client_min_success_ratio
    # 40 failing hosts in 5 minutes beside 400 delivered to: a client of the service
    assert _delivering(AddressSweepDetector(CFG.address_sweep), int(8 * ratio)) == []
    # fewer completed exchanges than the ratio: a sweep
    found = _delivering(AddressSweepDetector(CFG.address_sweep), int(8 * ratio) - 8)
    assert found and {(d.source, d.target) for d in found} == {("10.0.0.25", "tcp/25")}
    off = dataclasses.replace(CFG.address_sweep, client_min_success_ratio=0)
    assert _delivering(AddressSweepDetector(off), int(8 * ratio))


def test_a_scanners_answered_syns_are_no_completed_exchanges():
    # 100 hosts a minute answering half-open SYNs do not make the sweeper a client
    found = _delivering(AddressSweepDetector(CFG.address_sweep), 0, answered_syns=100)
    assert found and found[0].source == "10.0.0.25"


def test_tiers_can_be_switched_off():
    cfg = dataclasses.replace(CFG.port_scan, slow_min_ports=0, distributed_min_sources=0)
    det = PortScanDetector(cfg)
    assert [h for h, _ in det.tiers] == [cfg.horizon_seconds]
    assert service_name(65536 + 53) == "udp/53" and service_name(2 * 65536) == "icmp/echo"


# ------------------------------------------------------------------ cases, end to end

HARD = [c for c in cases("hard") if any(t in c.build.__module__ for t in ("cases_scans",))]


@pytest.mark.parametrize("case", HARD, ids=lambda c: c.name)
def test_every_hard_scan_case_is_found_with_the_right_attacker(case, tmp_path: Path):
    (r,) = run_cases([case], [1], tmp_path, DetectorsConfig(), analyse_capture)
    assert r.scenario.truths and found(r, matches), [
        (d.detector, d.source, d.target) for d in r.detections
    ]


def test_every_benign_case_is_quiet_for_scan_and_brute_force_detectors(tmp_path: Path):
    benign = [c for c in load_cases().values() if c.suite == "benign"]
    assert {
        "mail_filter_relay",
        "nat_mail_users",
        "delivery_optimization",
        "bittorrent_host",
        "cdn_browser",
        "monitoring_poller",
    } <= {c.name for c in benign}
    results = run_cases(benign, [1], tmp_path, DetectorsConfig(), analyse_capture)
    noisy = [
        f"{r.case.name}: {d.detector} {d.source} -> {d.target}"
        for r in results
        for d in r.detections
        if d.detector in MINE
    ]
    assert noisy == []


def test_a_full_store_is_merged_without_a_second_copy_of_itself() -> None:
    """A store at its row bound, merged in one pass with a window of new contacts: each
    old column is let go once its merged column is made, and the rows that go are never
    copied, so the merge's heap peak stays near one store (it was about two: the old
    store and the merged one side by side, then the kept rows copied out of it)."""
    import tracemalloc

    from netmon_exporter.detectors.scan_probes import COUNT, KINDS

    rng = np.random.default_rng(3)
    bound, n = 120_000, 30_000
    store = ContactStore(600, bound, sums=("probes", "unanswered"), ors=("kinds",))
    store.merge_kernel_rows = 0

    def window(t: float) -> dict[str, np.ndarray]:
        raw = np.zeros((n, 16), np.uint8)
        raw[:, 10:12] = 255
        raw[:, 12:] = rng.integers(0, 256, (n, 4))
        ts = t + rng.uniform(0, 60, n)
        return {
            "src": np.repeat(str_to_addrs(["192.0.2.7"]), n),
            "dst": raw.view("V16").ravel(),
            "svc": rng.integers(0, 65536, n),
            "first": ts,
            "last": ts,
            "probes": np.ones(n, COUNT),
            "unanswered": np.ones(n, COUNT),
            "kinds": np.ones(n, KINDS),
        }

    tracemalloc.start()
    try:
        for w in range(6):
            new = window(T0 + 60 * w)
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            store.update(new, T0 + 60 * (w + 1))
            peak = tracemalloc.get_traced_memory()[1] - start
            del new
    finally:
        tracemalloc.stop()
    size = sum(col.nbytes for col in store.rows.values())
    assert len(store) == bound and peak < 1.35 * size, (peak / size, size)


@pytest.mark.parametrize("seed", range(5))
def test_group_ids_numbers_groups_as_np_unique_does(seed: int) -> None:
    from netmon_exporter.detectors.scan_probes import group_ids, key_hash
    from netmon_exporter.flow_schema import str_to_addrs

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    hosts = str_to_addrs([f"10.0.{k // 250}.{k % 250}" for k in range(int(rng.integers(1, 40)))])
    src = hosts[rng.integers(0, len(hosts), n)]
    svc = rng.integers(0, int(rng.integers(1, 20)), n)
    _, first, gid, counts = np.unique(
        key_hash(src, svc), return_index=True, return_inverse=True, return_counts=True
    )
    got = group_ids(src, svc)
    for a, b in zip(got, (gid, first, counts), strict=True):
        assert a.dtype == np.int64 and np.array_equal(a, b)
    assert [len(x) for x in group_ids(src[:0], svc[:0])] == [0, 0, 0]
    one = group_ids(src[:1], svc[:1])
    assert [list(x) for x in one] == [[0], [0], [1]]


@pytest.mark.parametrize("seed", range(4))
def test_keys_of_many_rows_hash_as_the_numpy_chain_does(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled hash (keys of HASH_KERNEL_ROWS rows or more) gives the numpy chain's
    values for every kind of key column: addresses, signed services (negative too),
    narrow and wide unsigned integers, flags."""
    from netmon_exporter.detectors import scan_probes
    from netmon_exporter.flow_schema import str_to_addrs

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    addrs = str_to_addrs(
        [f"10.{k % 7}.{k // 250 % 250}.{k % 250}" for k in range(50)] + ["2001:db8::1", "::"]
    )
    parts = [
        addrs[rng.integers(0, len(addrs), n)],
        rng.integers(-(2**40), 2**40, n),
        rng.integers(0, 2**16, n).astype(np.uint16),
        rng.integers(-(2**31), 2**31, n).astype(np.int32),
        rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True),
        rng.integers(0, 2, n).astype(bool),
        addrs[rng.integers(0, len(addrs), n)],
    ]
    for k in (1, 2, 3, len(parts)):
        chosen = [parts[i] for i in rng.permutation(len(parts))[:k]]
        want = scan_probes.key_hash(*chosen)  # n < HASH_KERNEL_ROWS: numpy
        monkeypatch.setattr(scan_probes, "HASH_KERNEL_ROWS", 1)
        got = scan_probes.key_hash(*chosen)
        monkeypatch.undo()
        assert got.dtype == np.uint64 and np.array_equal(got, want), k


@pytest.mark.parametrize("seed", range(4))
def test_stable_order_is_the_stable_argsort(seed: int) -> None:
    from netmon_exporter.detectors.scan_probes import stable_order

    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 5000))
    for gid in (
        rng.integers(0, max(1, n // 3), n),
        rng.integers(0, 2, n),
        np.zeros(n, np.int64),
        np.arange(n)[::-1].copy(),
        rng.integers(0, 2**62, n),  # keys that would not fit: numpy's stable sort
        rng.integers(-5, 5, n),  # (group ids are never negative; still the same order)
        rng.integers(-(2**62), 0, n),
    ):
        assert np.array_equal(stable_order(gid), np.argsort(gid, kind="stable"))


@pytest.mark.parametrize("seed", range(4))
def test_member_of_is_isin(seed: int) -> None:
    from netmon_exporter.detectors.base import member_of

    rng = np.random.default_rng(seed)
    of = rng.integers(0, 2**64 - 1, int(rng.integers(0, 3000)), dtype=np.uint64, endpoint=True)
    of = np.concatenate([of, of[: len(of) // 3]])  # repeated hashes
    values = np.concatenate(
        [
            of[rng.integers(0, max(len(of), 1), int(rng.integers(0, 500)))] if len(of) else of,
            rng.integers(0, 2**64 - 1, 300, dtype=np.uint64, endpoint=True),
            np.array([0, 2**64 - 1], np.uint64),
        ]
    )
    ordered = np.sort(of)
    assert np.array_equal(member_of(values, ordered), np.isin(values, of))
    assert np.array_equal(member_of(values[:0], ordered), np.isin(values[:0], of))


@pytest.mark.parametrize("seed", range(4))
def test_count_in_counts_each_wanted_hash(seed: int) -> None:
    from netmon_exporter.detectors.scan_probes import count_in

    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 50, int(rng.integers(0, 3000))).astype(np.uint64)
    keys[: len(keys) // 4] = np.uint64(2**64 - 1)  # the largest hash, repeated
    wanted = np.concatenate([np.arange(60, dtype=np.uint64), np.array([2**64 - 1], np.uint64)])
    want = np.array([int((keys == w).sum()) for w in wanted])
    assert np.array_equal(count_in(keys, wanted), want)
    assert np.array_equal(count_in(keys[:0], wanted), np.zeros(len(wanted)))


@pytest.mark.parametrize("seed", range(6))
def test_merged_columns_in_one_pass_equal_numpys(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled merge of a column (min, max, bitwise or, saturated sum) against numpy's
    (``ufunc.at`` and the ufunc), with the stores' own dtypes: int32 counters near their
    limit (held there), int16 probe kinds, float64 times and content (NaN too)."""
    from netmon_exporter.detectors import scan_probes
    from netmon_exporter.detectors.scan_probes import COUNT, KINDS

    rng = np.random.default_rng(seed)
    args = dict(sums=("n",), maxes=("content",), ors=("kinds",))
    compiled, plain = ContactStore(300, 400, **args), ContactStore(300, 400, **args)
    compiled.merge_kernel_rows = plain.merge_kernel_rows = 0
    pool_src = str_to_addrs([f"10.0.{i // 250}.{i % 250}" for i in range(30)] + ["2001:db8::1"])
    pool_dst = str_to_addrs([f"192.168.1.{i}" for i in range(20)] + ["::1"])
    top = np.iinfo(COUNT).max
    merged: list[bool] = []

    def spy(*a: object) -> bool:
        merged.append(scan_probes.__dict__["_real_merge_column"](*a))
        return merged[-1]

    monkeypatch.setitem(scan_probes.__dict__, "_real_merge_column", scan_probes.merge_column)
    for w in range(10):
        new = _random_contacts(rng, w, pool_src, pool_dst, 20)
        n = len(new["last"])
        content = rng.uniform(0, 1e6, n)
        content[rng.random(n) < 0.02] = np.nan
        new["first"][rng.random(n) < 0.01] = np.nan  # never so in a store; NaN wins as in numpy
        new.update(
            n=rng.choice([1, 2, top // 3, top - 1, top], n).astype(COUNT),
            content=content,
            kinds=rng.choice([1, 2, 4, 32, -(2**15)], n).astype(KINDS),
        )
        now = 1060.0 + 60 * w
        with monkeypatch.context() as m:  # the compiled merge, and it did merge
            m.setattr(scan_probes, "merge_column", spy)
            got, touched = compiled.update(new, now)
        with monkeypatch.context() as m, np.errstate(invalid="ignore"):  # numpy's merge
            m.setattr(scan_probes, "merge_column", lambda *a: False)
            want, want_touched = plain.update(new, now)
        for k in want:
            assert got[k].dtype == want[k].dtype, k
            assert np.array_equal(got[k], want[k], equal_nan=got[k].dtype.kind == "f"), (w, k)
        assert np.array_equal(touched, want_touched)
        assert (got["n"] >= 0).all()  # held at the limit, never wrapped
    assert (got["n"] == top).any()
    assert len(merged) >= 20 and all(merged)  # first, last, n and content, each window


_M = (1 << 64) - 1


def _mix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _M
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _M
    return z ^ (z >> 31)


def _unmix(z: int) -> int:
    """The inverse of SplitMix64's finaliser (what an attacker computes)."""

    def unshift(y: int, s: int) -> int:
        x = y
        for _ in range(64 // s + 1):
            x = y ^ (x >> s)
        return x & _M

    z = unshift(z, 31)
    z = (z * pow(0x94D049BB133111EB, -1, 1 << 64)) & _M
    z = unshift(z, 27)
    z = (z * pow(0xBF58476D1CE4E5B9, -1, 1 << 64)) & _M
    z = unshift(z, 30)
    return (z - 0x9E3779B97F4A7C15) & _M


@pytest.mark.parametrize("background", [0, 5000])
def test_crafted_hash_collisions_do_not_merge_groups(background: int) -> None:
    """Keys are grouped by an unkeyed, invertible hash: from another /64 an attacker can
    pick an address whose (address, service) key hashes like a victim's. The two stay
    apart, and every group holds one key (checked against grouping by the keys)."""
    from netmon_exporter.detectors.base import addr_words
    from netmon_exporter.detectors.scan_probes import group_ids, key_hash

    victim = str_to_addrs(["2001:db8:1::25"])
    hi0, lo0 = (int(w[0]) for w in addr_words(victim))
    hi1 = hi0 ^ 0x5A5A  # the attacker's own prefix
    lo1 = _unmix(_mix(hi0) ^ _mix(lo0) ^ _mix(hi1))
    assert (hi1, lo1) != (hi0, lo0) and _mix(_mix(hi1) ^ _mix(lo1)) == _mix(_mix(hi0) ^ _mix(lo0))
    rng = np.random.default_rng(3)
    words = np.array([[hi0, lo0], [hi1, lo1]], dtype=np.uint64)
    noise = rng.integers(0, 2**63, (background, 2), dtype=np.int64).view(np.uint64)
    words = np.concatenate([words, noise[rng.integers(0, max(background // 4, 1), background)]])
    src = np.ascontiguousarray(words).view("V16").ravel()
    svc = np.concatenate([[22, 22], rng.integers(20, 24, background)])
    h = key_hash(src, svc)
    assert h[0] == h[1]  # the crafted collision
    gid, first, counts = group_ids(src, svc)
    assert gid[0] != gid[1]
    keys = np.column_stack([words, svc.astype(np.uint64)])
    assert (keys == keys[first[gid]]).all()  # one key a group
    n_keys = len(np.unique(keys, axis=0))
    assert len(first) == len(counts) == n_keys and counts.sum() == len(src)
    assert np.array_equal(np.bincount(gid), counts) and np.array_equal(
        gid[first], np.arange(n_keys)
    )


def test_an_ipv6_scanner_that_changes_address_every_probe_is_found_by_its_64():
    """Each probe from another address of one /64: no address probes more than one port,
    the /64 probes them all. Reported once, as the /64, with its addresses."""
    rows = [
        {**HALF_OPEN, "src": f"2001:db8:5:1:{k:x}:2:3:{k + 1:x}", "dst": "fd00:1::10"}
        | {"dport": 100 + k, "sport": 45000, "ts": T0 + 0.5 * k}
        for k in range(40)
    ]
    (d,) = run(PortScanDetector(CFG.port_scan), flows(rows))
    assert (d.source, d.target) == ("2001:db8:5:1::/64", "fd00:1::10")
    assert d.evidence["sources"] == 40 and d.evidence["distinct_ports"] == 40
    assert len(d.evidence["top_sources"]) == 5
    # two addresses probing 10 ports each: the /64 probed 20
    two = probes("2001:db8:5:1::7", "fd00:1::10", range(100, 110), **HALF_OPEN)
    two += probes("2001:db8:5:1::8", "fd00:1::10", range(110, 120), **HALF_OPEN)
    (d,) = run(PortScanDetector(CFG.port_scan), flows(two))
    assert d.source == "2001:db8:5:1::/64" and d.evidence["distinct_ports"] == 20
    # one address that scans is reported as itself, once, whatever its /64 adds
    single = probes("2001:db8:5:1::7", "fd00:1::10", range(100, 140), **HALF_OPEN)
    single += probes("2001:db8:5:1::8", "fd00:1::10", [9], **HALF_OPEN)
    (d,) = run(PortScanDetector(CFG.port_scan), flows(single))
    assert d.source == "2001:db8:5:1::7"


def test_many_addresses_of_a_64_reaching_a_few_ports_or_of_many_64s_are_not_a_scan():
    office = [
        {**HALF_OPEN, "src": f"2001:db8:5:1::{k + 1:x}", "dst": "fd00:1::10"}
        | {"dport": (80, 443, 8080, 8443)[k % 4], "sport": 45000 + k, "ts": T0 + 0.2 * k}
        for k in range(300)
    ]
    assert run(PortScanDetector(CFG.port_scan), flows(office)) == []
    others = [
        {**HALF_OPEN, "src": f"2001:db8:{k + 1:x}:1::9", "dst": "fd00:1::10"}
        | {"dport": 100 + k, "sport": 45000, "ts": T0 + 0.5 * k}
        for k in range(40)
    ]
    assert run(PortScanDetector(CFG.port_scan), flows(others)) == []


def test_a_64_on_the_allow_list_silences_its_finding():
    from netmon_exporter.config import IgnoreConfig
    from netmon_exporter.suppression import IgnoreRules, endpoints

    rows = [
        {**HALF_OPEN, "src": f"2001:db8:5:1::{k + 1:x}", "dst": "fd00:1::10"}
        | {"dport": 100 + k, "sport": 45000, "ts": T0 + 0.5 * k}
        for k in range(40)
    ]
    (d,) = run(PortScanDetector(CFG.port_scan), flows(rows))
    assert str(endpoints(d).source) == "2001:db8:5:1::"
    assert IgnoreRules.from_config(IgnoreConfig(sources=("2001:db8:5::/48",))).match(endpoints(d))
    assert not IgnoreRules.from_config(IgnoreConfig(sources=("2001:db8:5:1::3/128",))).match(
        endpoints(d)
    )


def _sweep6(
    n: int, per_address: int = 1, start: float = T0, step: float = 0.5, first: int = 1
) -> list[dict]:
    """``n`` probes of tcp/22 on distinct hosts of fd00:2::/64, ``per_address`` from each
    address of 2001:db8:5:1::/64 (privacy-style interface ids; ``first``: the first one)."""
    return [
        {**UNANSWERED, "src": f"2001:db8:5:1:{a * 7919 % 65536:x}:{a + 3:x}:2:{a + 1:x}"}
        | {"dst": f"fd00:2::{k + 1:x}", "dport": 22, "sport": 45000, "ts": start + step * k}
        for k in range(n)
        for a in [first + k // per_address]
    ]


def test_an_ipv6_sweep_from_an_address_per_probe_is_found_by_its_64():
    """Each probe from another address of one /64: no address probes two hosts (the
    distributed view needs 2 each), the /64 probes them all. Near the fast tier: 25
    hosts within 300 s are found, 24 are not."""
    (d,) = run(AddressSweepDetector(CFG.address_sweep), flows(_sweep6(25, step=11)), length=300)
    assert (d.source, d.target) == ("2001:db8:5:1::/64", "tcp/22")
    assert d.evidence["distinct_hosts"] == 25 and d.evidence["sources"] == 25
    assert d.evidence["horizon_seconds"] == CFG.address_sweep.horizon_seconds
    assert len(d.evidence["top_sources"]) == 5 and d.summary.startswith("25 addresses of")
    assert run(AddressSweepDetector(CFG.address_sweep), flows(_sweep6(24, step=12)), T0, 300) == []


def test_an_ipv6_sweep_at_one_host_a_minute_from_new_addresses_is_found_by_the_slow_tier():
    det = AddressSweepDetector(CFG.address_sweep)
    probes6 = _sweep6(60, step=60.0, start=T0 + 30)
    found_at = None
    for k in range(60):
        got = run(det, flows(probes6[k : k + 1]), T0 + 60 * k)
        if got:
            found_at = (k, got)
            break
    assert found_at is not None
    k, (d,) = found_at
    assert k == 39 and d.source == "2001:db8:5:1::/64"  # the 40th host: the slow tier
    assert d.evidence["horizon_seconds"] == CFG.address_sweep.slow_horizon_seconds


def test_an_ipv6_sweep_from_a_64_is_reported_once_not_also_as_many():
    """Two hosts per address (30 addresses) is also a distributed sweep of fd00:2::/64:
    reported once, as the /64. One address that sweeps is reported as itself, once."""
    (d,) = run(AddressSweepDetector(CFG.address_sweep), flows(_sweep6(60, per_address=2)))
    assert d.source == "2001:db8:5:1::/64" and d.evidence["sources"] == 30
    single = _sweep6(40, per_address=40) + _sweep6(1, start=T0 + 30, first=2)
    (d,) = run(AddressSweepDetector(CFG.address_sweep), flows(single))
    assert d.source == "2001:db8:5:1:1eef:4:2:2" and d.evidence["distinct_hosts"] == 40


def test_a_64_lan_whose_browsers_fail_on_a_few_servers_each_is_not_a_sweep():
    """A NAT-less IPv6 LAN: 60 hosts of one /64 browse (completed connections on 443),
    and each has two or three connections blocked (unanswered SYNs to distinct servers):
    150 failing hosts from the /64 in 5 minutes. An address a server answered on a
    service is not a rotating prober's: only addresses no host answered add up."""
    rows = []
    for a in range(60):
        src = f"2001:db8:5:1:{a * 7919 % 65536:x}:{a + 3:x}:2:{a + 1:x}"
        for j in range(8):
            rows.append({"src": src, "dst": f"2001:db8:99::{a * 8 + j + 1:x}", "dport": 443})
            rows[-1] |= {"sport": 40000 + j, "ts": T0 + 4 * a + j * 0.3}
        for j in range(2 + a % 2):
            dst = f"2001:db8:{0x700 + a * 3 + j:x}::10"  # trackers, in their own networks
            rows.append({**UNANSWERED, "src": src, "dst": dst})
            rows[-1] |= {"dport": 443, "sport": 41000 + j, "ts": T0 + 4 * a + 2 + j}
    batch = flows(rows)
    assert run(AddressSweepDetector(CFG.address_sweep), batch, length=300) == []
    # the same failures from addresses that did nothing else are a sweep
    failed = flows([r for r in rows if "bwd" in r])  # the UNANSWERED rows
    (d,) = run(AddressSweepDetector(CFG.address_sweep), failed, length=300)
    assert d.source == "2001:db8:5:1::/64" and d.evidence["distinct_hosts"] == 150


def test_many_addresses_of_a_64_on_few_hosts_or_of_many_64s_are_not_a_sweep():
    office = [
        {**UNANSWERED, "src": f"2001:db8:5:1::{k + 1:x}", "dst": f"fd00:2::{k % 20 + 1:x}"}
        | {"dport": 22, "sport": 45000 + k, "ts": T0 + 0.2 * k}
        for k in range(300)
    ]
    assert run(AddressSweepDetector(CFG.address_sweep), flows(office)) == []
    others = [
        {**UNANSWERED, "src": f"2001:db8:{k + 1:x}:1::9", "dst": f"fd00:2::{k + 1:x}"}
        | {"dport": 22, "sport": 45000, "ts": T0 + 0.5 * k}
        for k in range(40)
    ]
    assert run(AddressSweepDetector(CFG.address_sweep), flows(others)) == []


def test_a_64_on_the_allow_list_silences_its_sweep():
    from netmon_exporter.config import IgnoreConfig
    from netmon_exporter.suppression import IgnoreRules, endpoints

    (d,) = run(AddressSweepDetector(CFG.address_sweep), flows(_sweep6(40)))
    assert str(endpoints(d).source) == "2001:db8:5:1::"
    assert IgnoreRules.from_config(IgnoreConfig(sources=("2001:db8:5::/48",))).match(endpoints(d))
    inside = _sweep6(1)[0]["src"] + "/128"
    assert not IgnoreRules.from_config(IgnoreConfig(sources=(inside,))).match(endpoints(d))
