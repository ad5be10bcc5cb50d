"""The real daemon hashes what traffic controls with a key of its own (hash_key.py).

A tunnel whose names were searched against the unkeyed sketch hash (each falls into one
register with rank 1, ``tools.cases_dns.hide_in_sketch``) counts as one name without a
key; through the daemon its flow CSV shows about as many distinct names as it sent.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from netmon_exporter.pipeline import FlowSettings, process_file
from tests.integration.daemon_process import DaemonProcess
from tests.test_hash_key import _hidden_names, _tunnel


def test_the_daemon_keys_the_sketches_its_workers_build(
    daemon: DaemonProcess, daemon_site: Path, tmp_path: Path
) -> None:
    capture = _tunnel(tmp_path / "tunnel.pcap", _hidden_names(300))
    plain = process_file(capture, FlowSettings()).flows  # unkeyed: the attack works
    assert max(plain["dns_qnames"][plain["dns_queries"] > 0]) == 1.0
    shutil.copy(capture, daemon_site / "captures" / "tunnel.pcap")
    daemon.wait_for(
        lambda: daemon.metric("netmon_files_processed_total", {"kind": "pcap"}) == 1,
        timeout=60,
        what="the capture processed",
    )
    (out,) = (daemon_site / "out").rglob("*.csv")
    with out.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("dns_queries") not in (None, "", "0")]
    assert rows, "the tunnel's flow is in the CSV"
    names = max(float(r["dns_qnames"]) for r in rows)
    assert 300 * 0.6 < names < 300 * 1.4, names
