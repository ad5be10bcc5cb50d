"""Statements of behaviour in the docs, each tested by what the daemon really does.

Every test here names the doc sentence it guards in its docstring (``Guards <doc>:
"<quote>"``); tests/test_docs_guards.py fails when a guarded quote disappears from its
doc, so a guard cannot silently outlive the sentence it was written for.
"""

from __future__ import annotations

import datetime
import io
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmon_exporter.config import LLMConfig
from netmon_exporter.logging_setup import LOGGER_CATEGORIES, setup_logging
from netmon_exporter.metrics import ERROR_CATEGORIES

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    setup_logging("info", "logfmt", stream=buf)
    try:
        yield buf
    finally:
        setup_logging("info", "logfmt")


def _runbook_grep(category: str) -> re.Pattern[str]:
    """The pattern the runbook tells on-call to grep for (fixed string, as grep takes it)."""
    text = (ROOT / "alerts" / "runbook.md").read_text(encoding="utf-8")
    quoted = f"grep 'category={category}'"
    assert quoted in " ".join(text.split()), f"runbook no longer says {quoted}"
    return re.compile(re.escape(f"category={category}"))


# ------------------------------------------------------------------ log categories


def test_llm_failures_are_logged_with_category_llm(log_lines: io.StringIO) -> None:
    """Guards alerts/runbook.md: "the log lines with `category=llm` (HTTP status, timeout, connection refused)".

    A real failed request (nothing listens on the port) logs one line a
    ``grep 'category=llm'`` finds, with the reason in it.
    """
    from netmon_exporter.summarise import Summariser

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    s = Summariser(LLMConfig(enabled=True, url=url, timeout_seconds=1, max_retries=0))
    result = s.summarise({"window": {"start": 0.0, "end": 60.0}, "totals": {}, "detections": []})
    assert result.source == "template"
    found = [ln for ln in log_lines.getvalue().splitlines() if _runbook_grep("llm").search(ln)]
    assert found and "cannot connect" in found[0], log_lines.getvalue()


def test_alertmanager_lines_carry_category_alertmanager(log_lines: io.StringIO) -> None:
    """Guards alerts/runbook.md: "The log lines with `category=alertmanager` (HTTP 400 means an invalid alert".

    Every line of the Alertmanager pusher's logger carries the category, as its
    failures count in ``netmon_errors_total{category="alertmanager"}``.
    """
    from netmon_exporter import alerting

    alerting.log.warning("Alertmanager push: 1 of 1 alert(s) not delivered: HTTP 400")
    line = log_lines.getvalue().strip()
    assert _runbook_grep("alertmanager").search(line), line


def test_ledger_failures_are_logged_with_category_ledger(
    log_lines: io.StringIO, tmp_path: Path
) -> None:
    """Guards alerts/runbook.md: "For the ledger: the log lines with `category=ledger`"."""
    from netmon_exporter.ingest.ledger_link import LedgerLink

    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    link = LedgerLink(blocker, lambda event: None)
    assert link.open(0.0) is None
    line = log_lines.getvalue().strip()
    assert "category=ledger" in line and "cannot create the ledger" in line, line


def test_logger_categories_are_error_categories() -> None:
    assert set(LOGGER_CATEGORIES.values()) <= set(ERROR_CATEGORIES)
    for name in LOGGER_CATEGORIES:  # each names a real module's logger
        module = __import__(name, fromlist=["log"])
        assert module.log.name == name


def test_explicit_category_wins(log_lines: io.StringIO) -> None:
    logging.getLogger("netmon_exporter.summarise").warning("x", extra={"category": "config"})
    line = log_lines.getvalue()
    assert "category=config" in line and "category=llm" not in line


# ------------------------------------------------------------------ window reports kept

T = 1_790_000_040.0  # a whole minute


def _capture(path: Path, minutes: list[int], file_no: int) -> None:
    from tests.integration.test_ingest_daemon import flows_records, pcap_header

    path.write_bytes(
        pcap_header()
        + b"".join(flows_records(T + 60 * m, file_no * 10 + i, 2) for i, m in enumerate(minutes))
    )


def _report_name(minute: int) -> str:
    stamp = datetime.datetime.fromtimestamp(T + 60 * minute, datetime.UTC)
    return f"window-{stamp:%Y%m%dT%H%M%S}.000Z.json"


def _reports(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "out" / "windows").glob("window-*.json"))


@pytest.mark.integration
def test_a_backfilled_window_older_than_the_kept_ones_loses_its_report_at_once(
    tmp_path: Path,
) -> None:
    """Guards docs/window-report.md: "newest by window time (the order of the file names), not by when they were written".

    With ``max_windows: 3``, a backfilled window two hours before the kept ones is
    written and deleted at once, the log says so, and the window still counts.
    """
    from tests.integration.daemon_process import DaemonProcess
    from tests.integration.test_ingest_daemon import age

    (tmp_path / "captures").mkdir()
    (tmp_path / "config.yaml").write_text(
        "capture:\n  directory: captures\n  min_age_seconds: 0\n"
        "windows:\n  length_seconds: 60\n  max_windows: 3\n"
        "output:\n  directory: out\nstate:\n  directory: state\n"
    )
    _capture(tmp_path / "captures" / "live.pcap", [0, 1, 2, 3, 4, 5], 1)
    age(tmp_path / "captures" / "live.pcap")
    d = DaemonProcess(tmp_path / "config.yaml").start()
    try:
        # the watermark (newest packet minus one window) closes the first four windows
        d.wait_for(lambda: d.metric("netmon_windows_processed_total") == 4, 60, "4 windows")
        kept = _reports(tmp_path)
        assert kept == [_report_name(m) for m in (1, 2, 3)]
        _capture(tmp_path / "captures" / "backfill.pcap", [-120], 2)
        age(tmp_path / "captures" / "backfill.pcap")
        d.wait_for(lambda: d.metric("netmon_windows_processed_total") == 5, 60, "backfill")
        d.wait_for(lambda: "window report deleted at once" in d.log_text(), 10, "the log line")
        assert _reports(tmp_path) == kept  # the backfill's report came and went
        assert d.metric("netmon_windows_kept") == 3
    finally:
        d.stop()
    line = next(ln for ln in d.lines if "window report deleted at once" in ln)
    assert "level=info" in line and _report_name(-120) in line


# ------------------------------------------------------------------ flags


def test_readme_synopsis_lists_every_flag_and_no_other() -> None:
    """Guards README.md: "[--web.external-url=URL] [--web.route-prefix=PATH]".

    The "Running it" synopsis and the daemon's own flags are the same set.
    """
    from netmon_exporter.daemon import build_arg_parser

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    synopsis = text.split("## Running it", 1)[1].split("```", 2)[1]
    shown = set(re.findall(r"(?<![\w-])--[a-z][\w.-]*[a-z]", synopsis))
    shown -= {"--baseline", "--labelled"}  # sub-command flags
    real = {o for a in build_arg_parser()._actions for o in a.option_strings}
    assert shown == real - {"-h", "--help"}, shown ^ (real - {"-h", "--help"})
