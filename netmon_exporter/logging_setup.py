"""Structured logging in logfmt (default) or JSON, as Prometheus exporters do.

A record is always exactly one line: every value (file names, DNS names, server
messages) goes through :func:`~netmon_exporter.text_safety.escape_text`, which
escapes control characters, line separators, bidi controls and undecodable bytes
reversibly, and through :func:`~netmon_exporter.redaction.redact_secrets`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any

from .redaction import redact_secrets
from .text_safety import escape_log_key, escape_log_value, escape_text, to_text

LEVELS = ("debug", "info", "warn", "error")
FORMATS = ("logfmt", "json")

# Attributes every LogRecord has; anything else passed via ``extra=`` is a field.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

# Loggers whose every line is about one dependency. Their lines carry ``category=`` with
# the netmon_errors_total category that dependency's failures count under, so the
# runbook's ``grep 'category=llm'`` finds them; a ``category`` given in ``extra=`` wins.
LOGGER_CATEGORIES = {
    "netmon_exporter.summarise": "llm",
    "netmon_exporter.alerting": "alertmanager",
}


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # bad %-arguments: still one line, never a traceback on stderr
        return f"{to_text(record.msg)} (log arguments did not fit: {record.args!r})"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": {"WARNING": "warn", "CRITICAL": "error"}.get(
            record.levelname, record.levelname.lower()
        ),
        "caller": f"{record.module}:{record.lineno}",
        "msg": _message(record),
    }
    for key, value in vars(record).items():
        if key not in _RESERVED and not key.startswith("_"):
            out[key] = value
    if "category" not in out and record.name in LOGGER_CATEGORIES:
        out["category"] = LOGGER_CATEGORIES[record.name]
    if record.exc_info and record.exc_info[0] is not None:
        out["err"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
    return out


def _text(value: Any) -> str:
    """Return a field value as redacted text (containers as JSON)."""
    if isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        try:
            text = to_text(value)
        except Exception:  # a __str__ that raises must not lose the record
            text = f"<unprintable {type(value).__name__}>"
    return redact_secrets(text)


def _json_value(value: Any) -> Any:
    """Return a field value for the JSON formatter: numbers kept, all text escaped."""
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {escape_text(_text(k)): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return escape_text(_text(value))


class LogfmtFormatter(logging.Formatter):
    """One logfmt line per record; control characters and line separators escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(
            f"{escape_log_key(k)}={escape_log_value(_text(v))}" for k, v in _fields(record).items()
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; strings escaped as in logfmt, so a decoded value is safe too."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_json_value(_fields(record)))


def setup_logging(level: str = "info", fmt: str = "logfmt", stream: Any = None) -> None:
    """Configure the root logger once (idempotent: replaces our handler on repeat calls)."""
    if level not in LEVELS:
        raise ValueError(f"--log.level: {level!r} is not one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"--log.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter() if fmt == "logfmt" else JsonFormatter())
    handler.set_name("netmon")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "netmon":
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel({"warn": logging.WARNING}.get(level, getattr(logging, level.upper())))
    for noisy in ("urllib3", "watchdog", "numba", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
