"""Structured logging in logfmt (default) or JSON, as Prometheus exporters do."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LEVELS = ("debug", "info", "warn", "error")
FORMATS = ("logfmt", "json")

# Attributes every LogRecord has; anything else passed via ``extra=`` is a field.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": {"WARNING": "warn", "CRITICAL": "error"}.get(
            record.levelname, record.levelname.lower()
        ),
        "caller": f"{record.module}:{record.lineno}",
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _RESERVED and not key.startswith("_"):
            out[key] = value
    if record.exc_info and record.exc_info[0] is not None:
        out["err"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
    return out


def _logfmt_value(value: Any) -> str:
    s = (
        value
        if isinstance(value, str)
        else json.dumps(value, default=str)
        if isinstance(value, dict | list | tuple)
        else str(value)
    )
    if s == "" or any(c in s for c in ' ="\\\n\t'):
        s = '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


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
