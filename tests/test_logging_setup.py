from __future__ import annotations

import io
import json
import logging

import pytest

from netmon_exporter.logging_setup import setup_logging


def emit(fmt: str) -> str:
    buf = io.StringIO()
    setup_logging("info", fmt, stream=buf)
    logging.getLogger("netmon_exporter.test").warning(
        "file failed", extra={"file": "/tmp/a b.pcap", "reason": "format", "attempt": 2}
    )
    logging.getLogger("netmon_exporter.test").debug("hidden")
    return buf.getvalue()


def test_logfmt_quotes_values_with_spaces() -> None:
    line = emit("logfmt").strip()
    assert "level=warn" in line
    assert 'msg="file failed"' in line
    assert 'file="/tmp/a b.pcap"' in line
    assert "reason=format attempt=2" in line
    assert "hidden" not in line


def test_json_lines() -> None:
    record = json.loads(emit("json").strip())
    assert record["level"] == "warn" and record["msg"] == "file failed"
    assert record["attempt"] == 2 and record["file"] == "/tmp/a b.pcap"


def test_bad_level_or_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="--log.level"):
        setup_logging("verbose", "logfmt")
    with pytest.raises(ValueError, match="--log.format"):
        setup_logging("info", "xml")
