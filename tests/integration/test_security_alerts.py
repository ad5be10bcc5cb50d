"""Detections through the real daemon to a real Alertmanager, as an on-call team gets them.

One capture timeline, dropped as rotated 60-s files into the watched directory of the
real daemon, whose alerts go to the real Alertmanager running the shipped routing
(``prometheus/alertmanager.yml``, receivers redirected to a local webhook):

1. a busy benign role (issue 13's monitoring server polling 200 hosts, from
   ``tools.suites``), 15 minutes, with the site's vulnerability scanner sweeping one
   host's ports in the middle: nothing reaches Alertmanager. The scanner is on
   ``ignore.port_scan.sources``, so its scan is found and counted as suppressed:
   the allow-list is proven end to end. The poller is on ``ignore.beacon`` and
   ``ignore.address_sweep`` too (the detectors raised ~3000 beacons on it when this
   test was written); every finding of the phase must be counted as suppressed;
2. a port scan (``tools.scenarios``), then more benign traffic: exactly one alert,
   labelled ``category="security"`` and routed to the security receiver, which
   resolves once the scan has been absent for ``alerting.resolve_after_windows``; a
   config reload while it is open neither repeats nor forgets it;
3. the same scan replayed with its original (old) timestamps: reported, not pushed.

The captures are shifted so that phases 1 and 2 end about now (alerts are for live
traffic). Waiting is bounded: the daemon works through 25 files as fast as it can, and
Alertmanager's grouping waits are one second.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netmon_exporter.tools import scenarios, suites
from netmon_exporter.tools.scenarios import Truth

from ..daemon_site import daemon_config, write_site
from .conftest import AlertmanagerServer, Webhook, alertmanager_test_config, wait_until
from .daemon_process import DaemonProcess

pytestmark = pytest.mark.integration

ROTATION = 60.0  # seconds per capture file, as tcpdump -G 60 writes them
WINDOW = 60.0
SEED = 1
SCANNER_SEED = 3  # a port scan from an outside address: the site's scanning service
SCAN_SECONDS = 240.0  # the scan scenario's span (background included)
TAIL_SECONDS = 300.0  # benign traffic after the scan, so later windows close without it


# --------------------------------------------------------------------------- pcap files


Record = tuple[float, bytes, bytes]  # (time, record header without the time, data)


def read_pcap(path: Path) -> tuple[bytes, str, bool, list[tuple[float, bytes]]]:
    """Return (global header, byte order, nanosecond, [(time, frame)]) of a classic pcap."""
    raw = path.read_bytes()
    magic = raw[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    frames = []
    pos = 24
    while pos + 16 <= len(raw):
        sec, frac, incl, _orig = struct.unpack(order + "IIII", raw[pos : pos + 16])
        frames.append((sec + frac / (1e9 if nano else 1e6), raw[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    return raw[:24], order, nano, frames


def write_pcap(path: Path, header: bytes, order: str, frames: list[tuple[float, bytes]]) -> None:
    """Write microsecond pcap records atomically (a temporary name the patterns ignore)."""
    body = bytearray(header)
    body[:4] = struct.pack(order + "I", 0xA1B2C3D4)
    for t, frame in frames:
        sec = int(t)
        usec = min(int(round((t - sec) * 1e6)), 999_999)
        body += struct.pack(order + "IIII", sec, usec, len(frame), len(frame)) + frame
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(bytes(body))
    os.replace(tmp, path)


def rotate(
    frames: list[tuple[float, bytes]], start: float, end: float, prefix: str
) -> list[tuple[str, list[tuple[float, bytes]]]]:
    """Cut frames into consecutive ROTATION-second files named like tcpdump -G: prefix-<epoch>."""
    out = []
    t = start
    while t < end:
        part = [f for f in frames if t <= f[0] < t + ROTATION]
        if part:
            out.append((f"{prefix}-{int(t)}.pcap", part))
        t += ROTATION
    return out


def busiest_poller(frames: list[tuple[float, bytes]]) -> str:
    """Return the IPv4 source that talks to the most distinct destinations."""
    peers: dict[bytes, set[bytes]] = defaultdict(set)
    for _, frame in frames:
        if frame[12:14] == b"\x08\x00":
            peers[frame[26:30]].add(frame[30:34])
    src = max(peers, key=lambda s: len(peers[s]))
    return ".".join(str(b) for b in src)


def shifted(frames: list[tuple[float, bytes]], offset: float) -> list[tuple[float, bytes]]:
    return [(t + offset, f) for t, f in frames]


def frames_of(frames: list[tuple[float, bytes]], address: str) -> list[tuple[float, bytes]]:
    """Return the Ethernet frames to or from ``address`` (IPv4 or IPv6)."""
    packed = ipaddress.ip_address(address).packed
    where = {4: (b"\x08\x00", 26, 34), 16: (b"\x86\xdd", 22, 54)}[len(packed)]
    ethertype, lo, hi = where
    return [
        (t, f)
        for t, f in frames
        if f[12:14] == ethertype and packed in (f[lo : lo + len(packed)], f[hi - len(packed) : hi])
    ]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[AlertmanagerServer]:
    from .conftest import ALERTMANAGER_BIN

    if ALERTMANAGER_BIN is None:
        pytest.skip("alertmanager not installed (make system-deps)")
    am = AlertmanagerServer(alertmanager_test_config(webhook.url), tmp_path / "am").start()
    yield am
    am.stop()


def metric_sum(daemon: DaemonProcess, name: str, **labels: str) -> float:
    """Sum every sample of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = daemon.get("/metrics")
    return sum(
        s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def security_notifications(webhook: Webhook) -> list[dict[str, Any]]:
    """Every alert Alertmanager notified to the security receiver (path /security)."""
    with webhook._lock:  # noqa: SLF001 - the shared test helper's own lock
        payloads = list(webhook.received.get("/security", []))
    return [a for p in payloads for a in p["alerts"]]


def all_notifications(webhook: Webhook) -> list[dict[str, Any]]:
    with webhook._lock:  # noqa: SLF001
        return [a for ps in webhook.received.values() for p in ps for a in p["alerts"]]


# --------------------------------------------------------------------------- the test


@dataclass(frozen=True)
class Timeline:
    """The captures of the three phases, their times shifted to now (phase 3 excepted)."""

    header: bytes
    order: str
    poller: str
    scanner: str  # on ignore.port_scan.sources; scans during phase 1
    truth: Truth
    benign: list[tuple[float, bytes]]  # phase 1
    scan_and_tail: list[tuple[float, bytes]]  # phase 2
    replay: list[tuple[float, bytes]]  # phase 3: the scan at its original, old times


def build_timeline(out: Path) -> Timeline:
    benign = suites.generate_case(suites.load_cases()["benign/monitoring_poller"], SEED, out)
    scan = scenarios.generate("port_scan", SEED, out, duration=SCAN_SECONDS)
    (truth,) = scan.truths
    scanner_scan = scenarios.generate("port_scan", SCANNER_SEED, out, duration=SCAN_SECONDS)
    (scanner,) = scanner_scan.truths
    _, _, _, scanner_frames = read_pcap(scanner_scan.path)
    scanner_frames = frames_of(scanner_frames, scanner.attacker)  # its scan, no background
    header, order, _, benign_frames = read_pcap(benign.path)
    _, scan_order, _, scan_frames = read_pcap(scan.path)
    assert scan_order == order
    span = benign.end - benign.start
    # Benign 15 min, the scan, 5 min of benign again: ending about now, rotation-aligned.
    t0 = time.time() - span - SCAN_SECONDS - TAIL_SECONDS - 30
    t0 -= t0 % ROTATION
    scan_start = t0 + span + 1
    tail_start = scan_start + SCAN_SECONDS
    tail = shifted(benign_frames, tail_start - benign.start)
    mid = t0 + span / 2 - scanner_frames[0][0]
    return Timeline(
        header,
        order,
        busiest_poller(benign_frames),
        scanner.attacker,
        truth,
        sorted(
            shifted(benign_frames, t0 - benign.start) + shifted(scanner_frames, mid),
            key=lambda f: f[0],
        ),
        sorted(
            shifted(scan_frames, scan_start - scan.start)
            + [f for f in tail if f[0] < tail_start + TAIL_SECONDS],
            key=lambda f: f[0],
        ),
        scan_frames,
    )


def drop(
    captures: Path, timeline: Timeline, frames: list[tuple[float, bytes]], prefix: str
) -> None:
    """Write ``frames`` as rotated files into the watched directory, oldest first."""
    for name, part in rotate(
        frames, frames[0][0] - frames[0][0] % ROTATION, frames[-1][0] + 1, prefix
    ):
        write_pcap(captures / name, timeline.header, timeline.order, part)


CONFIG = daemon_config(
    """\
windows:
  length_seconds: {window:g}
alertmanager:
  urls: [{am}]
  timeout_seconds: 5
  resend_interval_seconds: 5   # also how long a resolved incident stays firing at least
  resolve_after_seconds: 60    # wall-clock fallback; windows resolve it long before
ignore:
  port_scan:
    sources: ['{scanner}']     # the vulnerability scanner
  beacon:
    sources: ['{poller}']      # the monitoring server polling every host
  address_sweep:
    sources: ['{poller}']
alerting:
  sensor: tap-test
  resolve_after_windows: 2
  max_window_age_seconds: 3600
"""
)


def test_benign_role_quiet_port_scan_one_security_alert_replay_held_back(
    tmp_path: Path, webhook: Webhook, alertmanager: AlertmanagerServer
) -> None:
    timeline = build_timeline(tmp_path / "generated")
    site = tmp_path / "site"
    captures = site / "captures"
    config = write_site(
        site,
        CONFIG.format(
            window=WINDOW, am=alertmanager.url, poller=timeline.poller, scanner=timeline.scanner
        ),
    )
    daemon = DaemonProcess(config, "--web.external-url=http://netmon.test:9864/").start()
    try:
        run_phases(daemon, captures, alertmanager, webhook, timeline)
    finally:
        try:
            daemon.stop(timeout=30)
        except AssertionError:
            daemon.kill()


def run_phases(
    daemon: DaemonProcess,
    captures: Path,
    am: AlertmanagerServer,
    webhook: Webhook,
    timeline: Timeline,
) -> None:
    truth = timeline.truth

    def log() -> str:
        """The daemon's log and the counters that tell where findings went."""
        _, body = daemon.get("/metrics")
        wanted = ("netmon_windows", "netmon_detections", "netmon_incidents", "netmon_alert")
        lines = [x for x in body.splitlines() if x.startswith(wanted) and not x.endswith(" 0.0")]
        return daemon.log_text() + "\n" + "\n".join(lines)

    def windows() -> float:
        return metric_sum(daemon, "netmon_windows_processed_total")

    # ---- 1. the benign role: nothing reaches Alertmanager --------------------------
    drop(captures, timeline, timeline.benign, "tap")
    first, last = timeline.benign[0][0], timeline.benign[-1][0]
    closed = int((last - WINDOW) // WINDOW - first // WINDOW)  # windows the watermark passed
    wait_until(lambda: windows() >= closed, 60, f"{closed} benign windows", log=log)
    time.sleep(3)  # a few push cycles and Alertmanager's group waits
    assert am.alerts() == [], "a benign role reached Alertmanager"
    assert all_notifications(webhook) == []
    found = metric_sum(daemon, "netmon_detections_total")
    suppressed = metric_sum(daemon, "netmon_detections_suppressed_total")
    assert found == suppressed, f"{found - suppressed:.0f} benign findings were not suppressed"
    scans = metric_sum(
        daemon, "netmon_detections_suppressed_total", detector="port_scan", reason="source"
    )
    assert scans >= 1, "the allow-listed scanner's scan was not found and suppressed"
    print(f"phase 1: {found:.0f} findings, all suppressed ({scans:.0f} from the scanner)")

    # ---- 2. a port scan: one security alert, resolved after the scan stops ---------
    drop(captures, timeline, timeline.scan_and_tail, "tap")
    (alert,) = wait_until(am.alerts, 60, "the port scan alert in Alertmanager", log=log)
    labels = alert["labels"]
    assert labels["category"] == "security"
    assert labels["alertname"] == "NetmonPortScan" and labels["detector"] == "port_scan"
    assert (labels["source"], labels["target"]) == (truth.attacker, truth.victim)
    assert labels["instance"] == "tap-test" and labels["severity"] in ("warning", "critical")
    assert alert["generatorURL"] == "http://netmon.test:9864"
    # A reload while the incident is open keeps it: no second alert, no forgotten one.
    config = daemon.config_file
    config.write_text(
        config.read_text().replace("resolve_after_windows: 2", "resolve_after_windows: 3")
    )
    code, body = daemon.get("/-/reload", method="POST")
    assert code == 200 and "configuration reloaded" in body, body
    fired = wait_until(
        lambda: [a for a in security_notifications(webhook) if a["status"] == "firing"],
        30,
        "the firing notification on the security receiver",
        log=log,
    )
    assert [a["labels"] for a in fired] == [labels]
    resolved = wait_until(
        lambda: [a for a in security_notifications(webhook) if a["status"] == "resolved"],
        60,
        "the resolved notification after the scan stopped",
        log=log,
    )
    assert [a["labels"] for a in resolved] == [labels]
    everything = all_notifications(webhook)
    assert {tuple(sorted(a["labels"].items())) for a in everything} == {
        tuple(sorted(labels.items()))
    }, "more than one alert reached Alertmanager"
    assert metric_sum(daemon, "netmon_incidents_opened_total") == 1

    # ---- 3. the same scan replayed with its old timestamps: reported, not pushed ---
    windows_before = windows()
    drop(captures, timeline, timeline.replay, "replay")
    wait_until(
        lambda: metric_sum(daemon, "netmon_alert_windows_held_back_total") >= 3,
        60,
        "the replayed windows to be held back",
        log=log,
    )
    assert windows() > windows_before
    time.sleep(2)
    assert [a for a in am.alerts() if a["status"]["state"] == "active"] == []
    assert len(all_notifications(webhook)) == len(everything), "a replayed capture paged"
    assert metric_sum(daemon, "netmon_incidents_opened_total") == 1
    assert any("window not pushed to Alertmanager" in line for line in daemon.lines)
