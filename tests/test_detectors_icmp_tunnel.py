"""ICMP tunnel detector: replies that are not echoes, in sizes that vary, per pair.

Messages are written one by one (times, direction, payload size) and cut into the
per-window records the flow engine hands a slice reader: each record counts its own
messages and bytes, and carries the flow's largest message so far in each direction.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter.config import DetectorsConfig, IgnoreConfig, IgnoreSectionsConfig
from netmon_exporter.detection import Detection
from netmon_exporter.detectors import REGISTRY
from netmon_exporter.detectors.icmp_tunnel import (
    BOUNDARY_MESSAGES,
    LESS,
    MORE,
    IcmpTunnelDetector,
    not_echoed,
)
from netmon_exporter.flow_schema import (
    RECORD_FLOW,
    RECORD_SLICE,
    RECORD_TAIL,
    FlowBatch,
    make_batch,
    str_to_addrs,
)
from netmon_exporter.suppression import SuppressionRules, suppress
from netmon_exporter.tools.evaluate import analyse_capture
from netmon_exporter.tools.evaluate_suites import run_cases
from netmon_exporter.tools.suites import cases
from tests.helpers import hard_case_found

CFG = DetectorsConfig().icmp_tunnel
T0 = 1_700_000_040.0  # a window boundary (60 s windows)
W = 60.0
CLIENT, SERVER = "10.0.0.66", "198.51.100.7"
HDR = 28  # ptunnel's header on every message


# ----------------------------------------------------------------------------- helpers


def records(
    msgs: list[tuple[float, bool, int]],
    src: str = CLIENT,
    dst: str = SERVER,
    v6: bool = False,
) -> dict[int, dict]:
    """One echo flow's messages ``(time, is_reply, payload)`` as the engine's per-window
    records, keyed by window index. The flow's forward side sent its first message."""
    msgs = sorted(msgs)
    first_is_reply = msgs[0][1]
    out: dict[int, dict] = {}
    fmax = bmax = 0
    for t, is_reply, size in msgs:
        w = int((t - T0) // W)
        fwd = is_reply == first_is_reply
        r = out.setdefault(
            w,
            {
                "src": dst if first_is_reply else src,
                "dst": src if first_is_reply else dst,
                "proto": 58 if v6 else 1,
                "itype": (129 if first_is_reply else 128) if v6 else (0 if first_is_reply else 8),
                "ts": t,
                "last": t,
                "fwd": 0,
                "bwd": 0,
                "fwd_bytes": 0,
                "bwd_bytes": 0,
            },
        )
        r["last"] = t
        if fwd:
            r["fwd"] += 1
            r["fwd_bytes"] += size
            fmax = max(fmax, size)
        else:
            r["bwd"] += 1
            r["bwd_bytes"] += size
            bmax = max(bmax, size)
        r["fwd_max"], r["bwd_max"] = fmax, bmax
    # a flow in one window is a whole flow; else its first slice (age 0), slices, its tail
    first, last = min(out), max(out)
    for w, r in out.items():
        r["age"] = r["ts"] - msgs[0][0]
        r["record"] = RECORD_FLOW if first == last else RECORD_TAIL if w == last else RECORD_SLICE
    return out


def batch(rows: list[dict]) -> FlowBatch:
    def c(k: str, default: float = 0.0) -> list:
        return [r.get(k, default) for r in rows]

    return make_batch(
        len(rows),
        src_ip=str_to_addrs(c("src")),
        dst_ip=str_to_addrs(c("dst")),
        src_port=[0] * len(rows),
        dst_port=[int(r["itype"]) << 8 if r["itype"] >= 0 else 0 for r in rows],
        protocol=c("proto"),
        first_ts=c("ts"),
        last_ts=c("last"),
        **{
            "Tot Fwd Pkts": c("fwd"),
            "Tot Bwd Pkts": c("bwd"),
            "TotLen Fwd Pkts": c("fwd_bytes"),
            "TotLen Bwd Pkts": c("bwd_bytes"),
            "Fwd Pkt Len Max": c("fwd_max"),
            "Bwd Pkt Len Max": c("bwd_max"),
            "icmp_type": c("itype"),
            "flow_record": c("record", RECORD_FLOW),
            "flow_age": c("age"),
        },
    )


def run(det: IcmpTunnelDetector, *flows: dict[int, dict], extra: dict[int, list] | None = None):
    """Feed the records window by window; return the detections of each window."""
    windows = sorted({w for f in flows for w in f} | set(extra or {}))
    out: dict[int, list[Detection]] = {}
    for w in range(windows[0], windows[-1] + 1):
        rows = [f[w] for f in flows if w in f] + list((extra or {}).get(w, []))
        found = det.detect(batch(rows) if rows else batch([]), T0 + W * w, T0 + W * (w + 1))
        for d in found:
            assert list(d.evidence) == list(REGISTRY["icmp_tunnel"].evidence)
            assert d.detector == "icmp_tunnel" and d.severity == CFG.severity
        out[w] = found
    return out


def first_finding(found: dict[int, list[Detection]]) -> tuple[int, Detection] | None:
    for w, dets in sorted(found.items()):
        if dets:
            return w, dets[0]
    return None


def detector(**changes: object) -> IcmpTunnelDetector:
    return IcmpTunnelDetector(dataclasses.replace(CFG, **changes))


# ----------------------------------------------------------------------------- traffic


def pings(
    t0: float,
    n: int,
    interval: float,
    size: int,
    rtt: float = 0.002,
    lost: float = 0.0,
    dup: bool = False,
    reply_size: int | None = None,
    seed: int = 1,
) -> list[tuple[float, bool, int]]:
    """``ping -s size -i interval``: each request, its echo (unless lost; twice if ``dup``;
    ``reply_size``: a responder that truncates)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        t = t0 + k * interval
        out.append((t, False, size))
        if rng.random() >= lost:
            out.append((t + rtt, True, size if reply_size is None else reply_size))
            if dup:
                out.append((t + rtt + 0.0002, True, size))
    return out


def ptunnel_ssh(seed: int, minutes: float = 12.0) -> list[tuple[float, bool, int]]:
    """An interactive SSH session through ptunnel: polls, keystrokes echoed by the shell,
    command outputs of 40-200 bytes a message, a few messages a second."""
    rng = np.random.default_rng(seed)
    t, end, out = T0 + 5.0, T0 + 5.0 + minutes * 60, []
    while t < end:
        for _ in range(int(rng.integers(3, 12))):  # thinking: polls every 1-2 s
            out += [(t, False, HDR), (t + 0.05, True, HDR)]
            t += float(rng.uniform(1, 2))
        for _ in range(int(rng.integers(4, 20))):  # typing: each key out and echoed
            out += [(t, False, HDR + 36), (t + 0.05, True, HDR + 36)]
            t += float(rng.uniform(0.15, 0.4))
        for _ in range(int(rng.integers(1, 6))):  # output, acknowledged
            out += [(t + 0.05, True, HDR + int(rng.integers(40, 200))), (t + 0.08, False, HDR)]
            t += 0.1
    return out


def pingtunnel_download(seed: int, size: int) -> list[tuple[float, bool, int]]:
    """A download through pingtunnel: ~1300-byte replies, the client's ack every 8."""
    rng = np.random.default_rng(seed)
    t, out, left = T0 + 20.0, [(T0 + 20.0, False, 60 + 517)], size
    while left > 0:
        for _ in range(8):
            chunk = min(left, 1300)
            if chunk <= 0:
                break
            out.append((t, True, 60 + chunk))
            left -= chunk
            t += float(rng.uniform(0.005, 0.02))
        out.append((t, False, 60 + int(rng.integers(0, 40))))
        t += 0.08
    return out


def icmpsh(seed: int, output: int, delay: float = 1.0, minutes: float = 14.0):
    """icmpsh: a poll every ``delay`` s carrying up to 64 bytes of output; the master's
    reply carries a command (or nothing); commands until ``output`` bytes were asked."""
    rng = np.random.default_rng(seed)
    t, end, out = T0 + 3.0, T0 + 3.0 + minutes * 60, []
    pending = asked = 0
    next_command = t + 20
    while t < end:
        chunk = min(pending, 64)
        pending -= chunk
        command = 0
        if t >= next_command and pending == 0 and asked < output:
            command = int(rng.integers(6, 25))
            pending = min(int(rng.integers(500, 6000)), output - asked)
            asked += pending
            next_command = t + float(rng.uniform(15, 60))
        out += [(t, False, chunk), (t + 0.05, True, command)]
        t += delay + 0.05
    return out


def upload(seed: int, size: int, rate: float = 5.0) -> list[tuple[float, bool, int]]:
    """An upload through a ptunnel proxy: chunks of up to 1024 bytes, each acknowledged."""
    rng = np.random.default_rng(seed)
    t, out, left = T0 + 10.0, [], size
    while left > 0:
        chunk = min(left, 1024 if rng.random() < 0.8 else int(rng.integers(100, 1024)))
        out += [(t, False, HDR + chunk), (t + 0.05, True, HDR)]
        left -= chunk
        t += float(rng.exponential(1 / rate))
    return out


# ----------------------------------------------------------------------------- the bounds


def bounds(
    q: int,
    r: int,
    qb: int,
    rb: int,
    qmax: int,
    rmax: int,
    qf: int = 0,
    rf: int = 0,
    continued: bool = True,
) -> tuple[bool, bool]:
    more, less = not_echoed(
        *(np.array([float(x)]) for x in (q, r, qb, rb, qmax, rmax)),
        float(qf),
        float(rf),
        np.array([continued]),
    )
    return bool(more[0]), bool(less[0])


def test_echoes_keep_within_the_bounds_whatever_is_lost_or_late():
    assert bounds(60, 60, 60 * 56, 60 * 56, 56, 56) == (False, False)
    assert bounds(60, 52, 60 * 56, 52 * 56, 56, 56) == (False, False)  # 8 unanswered
    assert bounds(60, 0, 60 * 56, 0, 56, 56) == (False, False)  # nobody answers
    # the replies of the window before's last requests: BOUNDARY_MESSAGES of slack
    late = BOUNDARY_MESSAGES
    assert bounds(60, 60 + late, 60 * 56, (60 + late) * 56, 56, 56) == (False, False)
    # mixed sizes (Windows: one identifier for every run), the largest ones unanswered
    assert bounds(40, 36, 36 * 32 + 4 * 1472, 36 * 32, 1472, 32) == (False, False)


def test_replies_beyond_the_bounds_are_not_echoes():
    assert bounds(10, 30, 10 * HDR, 30 * 900, HDR, 1000) == (True, False)  # a download
    assert bounds(300, 300, 2000, 20, 64, 12) == (False, True)  # icmpsh's output
    assert bounds(0, 30, 0, 30 * 900, 0, 1000) == (False, False)  # replies alone: not judged


def test_slack_is_boundary_messages_of_the_largest_size():
    assert BOUNDARY_MESSAGES == 2
    slack = 2 * 1000
    assert bounds(10, 10, 5000, 5000 + slack, 1000, 1000) == (False, False)
    assert bounds(10, 10, 5000, 5000 + slack + 1, 1000, 1000) == (True, False)
    assert bounds(10, 10, 5000 + slack, 5000, 1000, 1000) == (False, False)
    assert bounds(10, 10, 5000 + slack + 1, 5000, 1000, 1000) == (False, True)


def test_a_flows_first_record_has_no_slack():
    # nothing before it: every reply answers one of its requests
    assert bounds(1, 1, 1052, 28, 1052, 28, continued=False) == (False, True)
    assert bounds(1, 1, 28, 1052, 28, 1052, continued=False) == (True, False)
    assert bounds(1, 1, 1052, 1052, 1052, 1052, continued=False) == (False, False)
    assert bounds(1, 1, 1052, 28, 1052, 28) == (False, False)  # continued: within slack


def test_later_fragments_count_for_the_side_that_sent_them():
    # ping -s 8972 towards a jumbo-frame host: the echo flow holds each request's first
    # fragment (1472 bytes), the reply whole; the rest is the pair's fragment flow
    assert bounds(10, 10, 10 * 1472, 10 * 8972, 1472, 8972) == (True, False)
    assert bounds(10, 10, 10 * 1472, 10 * 8972, 1472, 8972, qf=10 * 7500) == (False, False)
    assert bounds(10, 10, 10 * 8972, 10 * 1472, 8972, 1472, rf=10 * 7500) == (False, False)


# ----------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ptunnel_interactive_ssh_is_found(seed: int):
    found = first_finding(run(detector(), records(ptunnel_ssh(seed))))
    assert found is not None
    _, d = found
    assert (d.source, d.target) == (CLIENT, SERVER)
    e = d.evidence
    assert e["payload_bytes"] >= CFG.min_payload_bytes == e["threshold"]
    assert e["reply_bytes"] > e["request_bytes"] and e["reason"] == MORE
    assert e["max_reply_bytes"] > e["max_request_bytes"]
    assert e["messages"] == e["requests"] + e["replies"] >= CFG.min_packets
    assert e["size_spread_bytes"] >= 1 and e["horizon_seconds"] == CFG.horizon_seconds
    assert e["first_seen"] <= e["last_seen"] and e["records"] >= 1
    assert CLIENT in d.summary and SERVER in d.summary


def test_ptunnel_session_is_reported_in_the_window_its_payload_crosses_the_threshold():
    msgs = ptunnel_ssh(4)
    found = run(detector(), records(msgs))
    w, d = first_finding(found)
    # every window after it with more of the session reports it again (one incident)
    assert all(found[k] for k in found if k > w and k < max(found))
    # the window before: what had been counted stayed under a threshold
    before = run(detector(), {k: v for k, v in records(msgs).items() if k < w})
    assert first_finding(before) is None


@pytest.mark.parametrize("size", [80_000, 300_000])
def test_pingtunnel_download_is_found(size: int):
    (w, d) = first_finding(run(detector(), records(pingtunnel_download(5, size))))
    assert (d.source, d.target) == (CLIENT, SERVER)
    assert d.evidence["reason"] == MORE and d.evidence["max_reply_bytes"] >= 1300


@pytest.mark.parametrize("delay", [0.2, 1.0])
def test_icmpsh_shell_is_found(delay: float):
    found = first_finding(run(detector(), records(icmpsh(6, 24_000, delay))))
    assert found is not None
    d = found[1]
    assert (d.source, d.target) == (CLIENT, SERVER)
    assert d.evidence["reason"] == LESS
    assert d.evidence["request_bytes"] > 10 * d.evidence["reply_bytes"]
    assert d.evidence["max_request_bytes"] == 64


def test_upload_through_an_acknowledging_proxy_is_found():
    (w, d) = first_finding(run(detector(), records(upload(7, 100_000))))
    assert (d.source, d.target) == (CLIENT, SERVER)
    assert d.evidence["reason"] == LESS and d.evidence["max_reply_bytes"] == HDR


def test_proxy_whose_kernel_also_answers_is_found():
    # every request echoed by the kernel as well as acknowledged by the proxy
    msgs = upload(8, 100_000)
    msgs += [(t + 0.01, True, size) for t, reply, size in msgs if not reply]
    (w, d) = first_finding(run(detector(), records(msgs)))
    assert d.evidence["replies"] > d.evidence["requests"] and d.evidence["reason"] == MORE


def test_ipv6_and_a_flow_first_seen_at_a_reply_are_oriented_from_the_requester():
    client6, server6 = "fd00:1::10", "2001:db8:77::5"
    msgs = pingtunnel_download(9, 100_000)
    msgs = [(T0 + 19.0, True, 60)] + msgs  # the capture began just after a request
    recs = records(msgs, client6, server6, v6=True)
    assert recs[0]["src"] == server6 and recs[0]["itype"] == 129
    (w, d) = first_finding(run(detector(), recs))
    assert (d.source, d.target) == (client6, server6)


def test_a_tunnel_changing_identifier_every_message_is_summed_per_pair():
    flows = []
    for t, _, size in (m for m in upload(10, 60_000) if not m[1]):
        flows.append(records([(t, False, size), (t + 0.05, True, HDR)]))
    (w, d) = first_finding(run(detector(), *flows))
    assert (d.source, d.target) == (CLIENT, SERVER) and d.evidence["records"] > 10


# ----------------------------------------------------------------------------- benign


def test_fixed_size_monitoring_of_many_hosts_is_quiet_and_leaves_no_state():
    det = detector()
    hosts = [
        records(
            pings(T0 + i * 0.002, 600, 1.0, 56, lost=0.01, seed=i),
            dst=f"10.1.{i // 250}.{i % 250 + 1}",
        )
        for i in range(500)
    ]
    found = run(det, *hosts)
    assert not any(found.values())
    assert len(det.store) == 0


@pytest.mark.parametrize(
    "msgs",
    [
        pings(T0, 900, 0.2, 1400, lost=0.01),  # ping -s 1400 -i 0.2 for three minutes
        pings(T0, 600, 1.0, 32, dup=True),  # every reply twice (DUP!)
        pings(T0, 600, 1.0, 1400, reply_size=548),  # a responder truncating large pings
        pings(T0, 600, 0.5, 1200, rtt=0.6),  # replies late: each window's last one
    ],
    ids=["large", "duplicated", "truncated", "late"],
)
def test_pings_of_one_size_are_quiet_whatever_their_replies(msgs):
    """Guards docs/detectors.md: "Fixed sizes are what keeps a responder that truncates
    large pings (replies smaller) or duplicates them quiet"."""
    assert not any(run(detector(), records(msgs)).values())


def _two_pingers_on_one_identifier(t0: float, n: int, rtt: float) -> list:
    """Windows: ping -t and ping -t -l 1472 at once to one host share identifier 1."""
    return pings(t0, n, 1.0, 32, rtt=rtt) + pings(t0 + 0.5, n, 1.0, 1472, rtt=rtt, seed=2)


def test_mixed_sizes_answered_in_the_next_window_are_quiet():
    # Windows runs of 60 pings back to back on identifier 1, each of its own size; each
    # run's last request is answered in the next window, beside that window's own
    msgs = []
    for w, size in enumerate((1472, 32, 1000, 64, 1472, 500, 32, 1400)):
        msgs += pings(T0 + W * w + 0.85, 60, 1.0, size, rtt=0.3, seed=w)
    assert not any(run(detector(), records(msgs)).values())


def test_a_capture_beginning_mid_ping_is_quiet():
    # the first packet is the reply to a request sent before the capture began
    msgs = [(T0 + 0.1, True, 1472)] + _two_pingers_on_one_identifier(T0 + 1, 50, 0.002)
    recs = records(msgs)
    assert list(recs) == [0] and recs[0]["itype"] == 0
    assert not any(run(detector(), recs).values())


def test_windows_runs_on_one_identifier_with_the_large_ones_unanswered_are_quiet():
    # ping -t (32 bytes) beside ping -f -l N bisecting the path MTU (1464): one flow
    msgs = pings(T0, 900, 1.0, 32)
    t = T0 + 30
    for size in (1250, 1375, 1437, 1468, 1453, 1460, 1464, 1466, 1465) * 6:
        msgs += pings(t, 2, 1.0, size, lost=1.0 if size > 1464 else 0.0)
        t += 3
    assert not any(run(detector(), records(msgs)).values())


def test_jumbo_pings_fragmented_one_way_are_quiet():
    """Guards docs/detectors.md: "later IP fragments the pair exchanged in the window count
    for the side that sent them"."""
    # ping -s N stepping to 8972, a process each, towards a 9000-byte host: the echo flow
    # holds the requests' first fragments, the fragment flow of the pair the rest
    flows, fragments = [], {}
    for k, size in enumerate((2000, 3000, 4000, 5000, 6000, 7000, 8000, 8972) * 2):
        t0 = T0 + 40 * k
        msgs = [(t0 + i, False, 1472) for i in range(10)]
        msgs += [(t0 + i + 0.001, True, size) for i in range(10)]
        flows.append(records(msgs))
        w = int((t0 - T0) // W)
        fragments.setdefault(w, []).append(
            {
                "src": CLIENT,
                "dst": SERVER,
                "proto": 1,
                "itype": -1,
                "ts": t0,
                "last": t0 + 9,
                "fwd": 10 * int(np.ceil((size + 8) / 1480) - 1),
                "bwd": 0,
                "fwd_bytes": 10 * (size - 1472),
                "bwd_bytes": 0,
                "fwd_max": 1480,
                "bwd_max": 0,
            }
        )
    assert not any(run(detector(), *flows, extra=fragments).values())
    # without the fragment flow the same echo flows would look like a download
    assert any(run(detector(), *flows).values())


def test_replies_alone_are_not_judged():
    # echo replies to a broadcast ping, or backscatter of someone else's spoofed pings
    msgs = [(T0 + 0.3 * k, True, int(100 + k % 900)) for k in range(600)]
    recs = records(msgs, SERVER, CLIENT)
    assert not any(run(detector(), recs).values())


# ----------------------------------------------------------------------------- edges


def _one_window(requests: int, replies: int, request_bytes: int, reply_bytes: int, rmax: int):
    return {
        0: {
            "src": CLIENT,
            "dst": SERVER,
            "proto": 1,
            "itype": 8,
            "ts": T0 + 1,
            "last": T0 + 50,
            "fwd": requests,
            "bwd": replies,
            "fwd_bytes": request_bytes,
            "bwd_bytes": reply_bytes,
            "fwd_max": HDR,
            "bwd_max": rmax,
        }
    }


def test_payload_threshold_edge():
    at = _one_window(25, 25, 25 * HDR, CFG.min_payload_bytes - 25 * HDR, 1000)
    below = _one_window(25, 25, 25 * HDR, CFG.min_payload_bytes - 25 * HDR - 1, 1000)
    (d,) = run(detector(), at)[0]
    assert d.evidence["payload_bytes"] == CFG.min_payload_bytes
    assert run(detector(), below)[0] == []


def test_message_threshold_edge():
    n = CFG.min_packets // 2
    at = _one_window(n, CFG.min_packets - n, n * HDR, 20_000, 1000)
    below = _one_window(n - 1, CFG.min_packets - n, (n - 1) * HDR, 20_000, 1000)
    (d,) = run(detector(), at)[0]
    assert d.evidence["messages"] == CFG.min_packets
    assert run(detector(), below)[0] == []


def test_sizes_must_vary_by_a_byte():
    fixed = _one_window(25, 25, 25 * HDR, 25 * 1000, 1000)  # every reply 1000, every request 28
    assert run(detector(), fixed)[0] == []
    # the same flow's next window: one reply a byte larger than the others were
    varied = {**fixed, 1: {**fixed[0], "ts": T0 + 61, "last": T0 + 110, "bwd_max": 1001}}
    varied[1]["bwd_bytes"] = 24 * 1000 + 1001
    found = run(detector(), varied)
    assert found[0] == [] and found[1][0].evidence["size_spread_bytes"] == 1.0


def test_payload_adds_up_over_the_horizon_only():
    half = _one_window(25, 25, 25 * HDR, 9000, 1000)[0]

    def at(w: int) -> dict:
        return {**half, "ts": T0 + W * w + 1, "last": T0 + W * w + 50}

    found = run(detector(), {0: at(0), 58: at(58)})
    assert found[0] == [] and found[58]
    found = run(detector(), {0: at(0), 61: at(61)})
    assert not any(found.values())


def test_a_finding_is_not_repeated_in_windows_without_new_exchanges():
    msgs = upload(11, 60_000)
    end = int((max(t for t, _, _ in msgs) - T0) // W)
    # another host keeps exchanging not-echoed messages (too few to report) afterwards
    other = records(
        [(T0 + W * (end + 1) + 2 * k, k % 2 == 1, 300 + k) for k in range(40)], "10.0.0.77"
    )
    found = run(detector(), records(msgs), other)
    assert found[end] and all(found[w] == [] for w in found if w > end)


def test_state_is_bounded():
    det = detector(max_state_rows=1000)
    for w in range(3):
        rows = [
            {
                **_one_window(3, 3, 3 * HDR, 3000 + i, 1000 + i)[0],
                "src": f"10.9.{i // 250}.{i % 250}",
            }
            for i in range(800)
        ]
        det.detect(batch(rows), T0 + W * w, T0 + W * (w + 1))
        assert len(det.store) <= 1000


def test_disabled_and_empty_windows():
    assert run(detector(enabled=False), records(upload(12, 100_000))) == {
        w: [] for w in range(0, max(records(upload(12, 100_000))) + 1)
    }
    assert detector().detect(batch([]), T0, T0 + W) == []


def test_allow_lists_suppress_by_source_or_destination():
    (w, d) = first_finding(run(detector(), records(upload(13, 100_000))))

    def rules(**lists: list[str]) -> SuppressionRules:
        section = IgnoreConfig(**{k: tuple(v) for k, v in lists.items()})
        return SuppressionRules.from_config(IgnoreSectionsConfig(icmp_tunnel=section))

    kept, gone = suppress([d], rules(destinations=[SERVER]))
    assert kept == [] and gone[0].to_dict()["suppressed_by"] == "ignore.icmp_tunnel.destinations"
    kept, gone = suppress([d], rules(sources=["10.0.0.0/24"]))
    assert kept == [] and gone[0].reason == "source"
    assert suppress([d], rules(sources=["10.0.1.0/24"]))[0] == [d]


# ----------------------------------------------------------------------------- captures


@pytest.mark.parametrize(
    "name",
    [
        "ptunnel_ssh_session",
        "pingtunnel_https_download",
        "icmpsh_reverse_shell",
        "icmp_exfiltration_upload",
    ],
)
def test_hard_cases_are_found_from_their_captures(tmp_path: Path, name: str):
    r = hard_case_found(tmp_path, name)
    assert all(
        d.detector == "icmp_tunnel"
        for d in r.detections
        if d.source == r.scenario.truths[0].attacker
    )


def test_benign_icmp_roles_are_quiet_for_every_detector(tmp_path: Path):
    selected = [
        c
        for c in cases("benign")
        if c.name
        in {"icmp_monitoring_many_hosts", "large_pings_and_jumbo_test", "mtu_probing_and_pathping"}
    ]
    assert len(selected) == 3
    for r in run_cases(selected, [1], tmp_path, DetectorsConfig(), analyse_capture):
        assert r.detections == [], (r.case.name, [(d.detector, d.summary) for d in r.detections])
