from __future__ import annotations

import io
import json
import logging
import os
import unicodedata
from pathlib import Path

import pytest

from netmon_exporter.logging_setup import JsonFormatter, LogfmtFormatter, setup_logging


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


# ------------------------------------------------------------------ hostile values

HOSTILE_NAME = "cap\r\x1b[31m\x0b\x0c\x85\u2028\u2029\u202e" + os.fsdecode(b"bad-\xff.pcap")
ESCAPED_NAME = "cap\\r\\u001b[31m\\u000b\\u000c\\u0085\\u2028\\u2029\\u202ebad-\\xff.pcap"


def emit_hostile(fmt: str) -> str:
    buf = io.StringIO()
    setup_logging("info", fmt, stream=buf)
    log = logging.getLogger("netmon_exporter.test")
    log.warning("cannot read %s", HOSTILE_NAME, extra={"file": HOSTILE_NAME, "kind": "pcap"})
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_hostile_file_name_is_one_escaped_line(fmt: str) -> None:
    out = emit_hostile(fmt)
    assert out.endswith("\n") and out.count("\n") == 1
    line = out[:-1]
    assert line.splitlines() == [line]  # no CR, VT, FF, NEL, U+2028/9 either
    assert not [c for c in line if unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"}]
    if fmt == "logfmt":
        assert f"file={ESCAPED_NAME}" in line
        assert f'msg="cannot read {ESCAPED_NAME}"' in line
    else:
        record = json.loads(line)
        assert record["file"] == ESCAPED_NAME and record["msg"] == f"cannot read {ESCAPED_NAME}"
        line.encode("ascii")  # \u escapes only: no raw separators, no lone surrogates


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_file_name_as_bytes_and_path_log_readably(fmt: str) -> None:
    buf = io.StringIO()
    setup_logging("info", fmt, stream=buf)
    logging.getLogger("netmon_exporter.test").warning(
        "x", extra={"raw": b"bad-\xff.pcap", "path": Path(os.fsdecode(b"/c/bad-\xfe"))}
    )
    line = buf.getvalue()
    assert line.count("\n") == 1
    if fmt == "logfmt":
        assert "raw=bad-\\xff.pcap path=/c/bad-\\xfe" in line
    else:
        record = json.loads(line)
        assert record["raw"] == "bad-\\xff.pcap" and record["path"] == "/c/bad-\\xfe"


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"])
def test_bad_log_arguments_still_one_line(formatter: logging.Formatter) -> None:
    record = logging.LogRecord("t", logging.WARNING, "f.py", 1, "needs two %s %s", ("a\nb",), None)
    line = formatter.format(record)
    assert line.splitlines() == [line] and "needs two %s %s" in line


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_credentials_in_log_values_are_redacted(fmt: str) -> None:
    buf = io.StringIO()
    setup_logging("info", fmt, stream=buf)
    logging.getLogger("netmon_exporter.test").warning(
        "push failed: HTTP 401: echo Authorization: Bearer sk-live-0123456789",
        extra={"url": "http://admin:hunter2@am.example:9093/api/v2/alerts"},
    )
    out = buf.getvalue()
    assert "sk-live-0123456789" not in out and "hunter2" not in out
    assert "[REDACTED]" in out and "am.example:9093/api/v2/alerts" in out
