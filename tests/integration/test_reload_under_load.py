"""Reload is all or nothing, also under load (issue 10 item 2).

Files flow, the reporter thread is busy with a slow LLM and the pusher thread with
Alertmanager, while SIGHUP arrives every 50 ms with configs that alternate between two
valid ones and broken ones (a model file that does not load: valid YAML that fails in
the prepare step; and invalid YAML). Nothing is lost, nothing raises, and after a failed
reload the last good settings are the ones in force.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from ..daemon_site import daemon_config
from ..loopback_http import LoopbackServer
from .daemon_process import DaemonProcess
from .test_ingest_daemon import flows_records, metric, metric_sum, pcap_header

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = 1_790_000_000.0

CONFIG = daemon_config(
    """\
windows:
  length_seconds: 10
llm:
  enabled: true
  url: {llm}/v1
  model: {model}
  timeout_seconds: 5
alertmanager:
  urls: [{am}]
alerting:
  max_window_age_seconds: 0
models:
  anomaly_path: {model_path}
""",
    workers=2,
    processing="  batch_size: {batch}\n",
)


def test_sighup_every_50ms_under_load_loses_nothing(tmp_path: Path) -> None:
    calls = {"llm": 0, "am": 0}

    def llm(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        calls["llm"] += 1
        time.sleep(0.2)  # a slow model keeps the reporter thread busy
        answer = {"choices": [{"message": {"content": "Quiet window."}}]}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def am(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        calls["am"] += 1
        time.sleep(0.05)
        return 200, {}, b""

    llm_srv, am_srv = LoopbackServer(llm), LoopbackServer(am)
    (tmp_path / "captures").mkdir()
    cfg = tmp_path / "config.yaml"

    def write(batch: int, model: str, model_path: str = "''") -> None:
        cfg.write_text(
            CONFIG.format(
                batch=batch,
                llm=llm_srv.base_url,
                model=model,
                am=am_srv.base_url,
                model_path=model_path,
            )
        )

    write(8, "m-a")
    d = DaemonProcess(cfg).start()
    stop = threading.Event()
    sent = {"good": 0, "bad": 0}

    def hup() -> None:
        n = 0
        while not stop.wait(0.05):
            n += 1
            if n % 5 == 0:
                write(3, "m-broken", model_path="missing-model.skops")  # fails in prepare
                sent["bad"] += 1
            elif n % 7 == 0:
                cfg.write_text("capture: [unclosed\n")  # fails to load
                sent["bad"] += 1
            else:
                write(8 if n % 2 else 16, "m-a" if n % 2 else "m-b")
                sent["good"] += 1
            d.send(signal.SIGHUP)

    files = 120
    packets = 0
    try:
        t = threading.Thread(target=hup, daemon=True)
        t.start()
        for i in range(files):
            recs = flows_records(T0 + i * 2.0, i, 5)  # windows close as files flow
            p = tmp_path / "captures" / f".f-{i:04d}.tmp"
            p.write_bytes(pcap_header() + recs)
            p.rename(tmp_path / "captures" / f"f-{i:04d}.pcap")
            packets += 10
            time.sleep(0.02)
        d.wait_for(
            lambda: metric(d, "netmon_files_processed_total", {"kind": "pcap"}) == files,
            timeout=120,
            what="every file processed during the reload storm",
        )
        stop.set()
        t.join(5)
        assert metric_sum(d, "netmon_packets_total") == packets
        assert metric(d, "netmon_errors_total", {"category": "internal"}) == 0
        assert metric(d, "netmon_config_reload_failures_total") > 0
        assert metric(d, "netmon_config_reloads_total") > 10
        assert calls["llm"] > 0 and calls["am"] >= 0

        # A last good config, then a broken one: the good one stays in force.
        write(5, "m-final")
        d.send(signal.SIGHUP)
        d.wait_for(
            lambda: metric(d, "netmon_config_batch_size") == 5, timeout=20, what="good reload"
        )
        failures = metric(d, "netmon_config_reload_failures_total")
        write(7, "m-broken", model_path="missing-model.skops")
        d.send(signal.SIGHUP)
        d.wait_for(
            lambda: metric(d, "netmon_config_reload_failures_total") > failures,
            timeout=20,
            what="the broken reload refused",
        )
        assert metric(d, "netmon_config_last_reload_successful") == 0
        assert metric(d, "netmon_config_batch_size") == 5  # the old settings are intact
        status, body = d.get("/health")
        assert status == 200, body
    finally:
        stop.set()
        rc = d.stop()
        llm_srv.close()
        am_srv.close()
    assert rc == 0
    assert "Traceback" not in d.log_text()
    print(f"\nreload storm: {sent['good']} good and {sent['bad']} bad SIGHUPs, {files} files")
