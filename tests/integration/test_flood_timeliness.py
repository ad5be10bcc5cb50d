"""A long single-flow flood through the real daemon on 60-s rotated files (issue 11 item 1).

Before interim records, a flow reached windows only when it ended: an 8-minute UDP
flood on one 5-tuple was reported in the window where its flow ended, and its packets
were missing from the windows in which they were sent. Here the files have timestamps in
the past, so the daemon works them off in seconds.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import numpy as np
import pytest

from ..daemon_site import daemon_config, write_site
from .daemon_process import DaemonProcess
from .test_ingest_daemon import age, metric, pcap_header, udp_record

pytestmark = [pytest.mark.integration]

T0 = 1_790_000_040.0  # a window start (60 s windows), in the past
FILES = 10  # minutes of capture, one rotated file per minute (tcpdump -G 60)
ATTACKER, VICTIM = (198, 51, 100, 7), (10, 0, 0, 53)
FLOOD_START, FLOOD_SECONDS, FLOOD_PPS = T0 + 80.0, 480.0, 1200

CONFIG = daemon_config("windows:\n  length_seconds: 60\n", workers=2)


def _records(times: np.ndarray, which: np.ndarray, frames: list[bytes]) -> bytes:
    """pcap records, in time order, of ``frames[which[i]]`` at ``times[i]`` (equal lengths)."""
    size = len(frames[0])
    order = np.argsort(times, kind="stable")
    dtype = [("sec", "<u4"), ("usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"), ("f", f"V{size}")]
    rec = np.zeros(len(times), dtype=dtype)
    t = times[order]
    rec["sec"] = np.floor(t).astype(np.uint32)
    rec["usec"] = np.round((t - np.floor(t)) * 1e6).clip(0, 999_999).astype(np.uint32)
    rec["incl"] = rec["orig"] = size
    rec["f"] = np.frombuffer(b"".join(frames), dtype=f"V{size}")[which[order]]
    return rec.tobytes()


def write_capture(directory: Path) -> collections.Counter:
    """Write the rotated files; return the packets of each window (by packet time)."""
    rng = np.random.default_rng(11)
    frames = [udp_record(0, ATTACKER, VICTIM, 40001, 9999)[16:]]  # one 5-tuple
    n = int(FLOOD_SECONDS * FLOOD_PPS)
    times = [FLOOD_START + np.sort(rng.uniform(0, FLOOD_SECONDS, n))]
    which = [np.zeros(n, np.int64)]
    # background: a few DNS-like exchanges a minute between other hosts
    for k in range(40):
        a, b = (10, 1, 0, 1 + k), (192, 0, 2, 1 + k % 5)
        frames += [udp_record(0, a, b, 40000 + k, 53)[16:], udp_record(0, b, a, 53, 40000 + k)[16:]]
        t = T0 + np.sort(rng.uniform(0, FILES * 60.0, 12))
        times += [t, t + 0.01]
        which += [np.full(12, 1 + 2 * k), np.full(12, 2 + 2 * k)]
    all_t, all_w = np.concatenate(times), np.concatenate(which)
    for minute in range(FILES):
        lo, hi = T0 + 60 * minute, T0 + 60 * (minute + 1)
        sel = (all_t >= lo) & (all_t < hi)
        path = directory / f"s0-{int(lo)}.pcap"
        path.write_bytes(pcap_header() + _records(all_t[sel], all_w[sel], frames))
        age(path, 3600 - minute)  # in order, and old enough to be read at once
    return collections.Counter(np.floor((all_t - T0) / 60).astype(int).tolist())


def reports(root: Path) -> list[dict]:
    return [
        json.loads(p.read_text()) for p in sorted((root / "out" / "windows").glob("window-*.json"))
    ]


def test_an_8_minute_single_flow_flood_is_reported_where_it_starts(tmp_path: Path) -> None:
    root = tmp_path
    write_site(root, CONFIG)
    expected = write_capture(root / "captures")
    started = time.monotonic()
    d = DaemonProcess(root / "config.yaml").start()
    try:
        # the windows close as later files come: all but the last two are reported
        d.wait_for(
            lambda: len(reports(root)) >= FILES - 2,
            timeout=90,
            what="the window reports of the first eight minutes",
        )
        assert (
            metric(d, "netmon_detections_total", {"detector": "udp_flood", "severity": "warning"})
            >= 1
        )
    finally:
        d.stop()
    elapsed = time.monotonic() - started
    got = {int((r["window"]["start"] - T0) // 60): r for r in reports(root)}
    start_window = int((FLOOD_START - T0) // 60)
    # reported in the window where the flood starts (or the next one), naming both ends
    first = min(
        w
        for w, r in got.items()
        for det in r["detections"]
        if det["detector"] == "udp_flood"
        and det["source"] == "198.51.100.7"
        and det["target"] == "10.0.0.53"
    )
    assert first <= start_window + 1, (first, start_window)
    assert first == start_window  # 40 s of 1200 pps in its first window is plenty
    # every packet counted in the window where it was sent, once (across rotations and
    # the flow carried from file to file)
    # and its bytes on the wire, as netmon_bytes_total counts them (every frame here is
    # a UDP datagram of the same size; its payload is what CICFlowMeter's TotLen counts)
    frame = len(udp_record(0, ATTACKER, VICTIM, 40001, 9999)) - 16
    for w, r in got.items():
        assert r["totals"]["packets"] == expected[w], (w, r["totals"])
        assert r["totals"]["bytes"] == expected[w] * frame, (w, r["totals"])
        assert 0 < r["totals"]["payload_bytes"] < r["totals"]["bytes"], (w, r["totals"])
    # the flood is one flow: counted once, in the window where it began, not yet ended
    assert sum(r["totals"]["flows"] for r in got.values()) < 600
    assert elapsed < 120, elapsed
