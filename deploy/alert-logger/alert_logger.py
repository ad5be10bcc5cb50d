"""A webhook receiver for Alertmanager that writes every notification to its log.

The compose stack's Alertmanager sends its ``pager``, ``ticket`` and ``security``
receivers here (``prometheus/alertmanager.yml``), so notifications are delivered and
visible (``docker compose logs alert-logger``) without accounts or secrets. Replace the
receivers with your paging, ticketing and security tools for production.

Standard library only, so it runs in the plain Python image::

    python alert_logger.py --listen 0.0.0.0:8080

Each notification is printed as one JSON line: the receiver path, Alertmanager's
receiver name and status, and each alert's status, labels and summary. ``GET /-/healthy``
answers 200 for the container health check.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 1 << 20


def summarise(path: str, payload: Any) -> dict[str, Any]:
    """Reduce an Alertmanager webhook payload to what a log reader needs."""
    if not isinstance(payload, dict):
        return {"path": path, "error": "payload is not a JSON object"}
    alerts = payload.get("alerts") if isinstance(payload.get("alerts"), list) else []
    return {
        "path": path,
        "receiver": payload.get("receiver"),
        "status": payload.get("status"),
        "group_labels": payload.get("groupLabels"),
        "alerts": [
            {
                "status": a.get("status"),
                "labels": a.get("labels"),
                "summary": (a.get("annotations") or {}).get("summary"),
                "starts_at": a.get("startsAt"),
            }
            for a in alerts
            if isinstance(a, dict)
        ],
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "alert-logger"
    sys_version = ""

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/-/healthy":
            self._reply(200, b"OK\n")
        else:
            self._reply(404, b"POST Alertmanager webhooks here\n")

    def do_POST(self) -> None:  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._reply(413, b"body too large or length missing\n")
            return
        raw = self.rfile.read(length)
        try:
            record = summarise(self.path, json.loads(raw))
        except (ValueError, UnicodeDecodeError):
            self._reply(400, b"not JSON\n")
            return
        sys.stdout.write(json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n")
        sys.stdout.flush()
        self._reply(200, b"logged\n")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Keep the log to notifications only."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0:8080", help="host:port to listen on")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    print(f"alert-logger listening on {host or '0.0.0.0'}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
