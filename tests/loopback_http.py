"""A real HTTP server on 127.0.0.1 (port 0) for tests that play an endpoint.

Used to stand in for the LLM endpoint, Alertmanager's API and Alertmanager webhook
receivers: every POST goes to one function, which returns the status, the headers
and the body to answer with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (path, request headers, raw body) -> (status, response headers, response body)
PostHandler = Callable[[str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


class LoopbackServer:
    """Serve POSTs with ``on_post`` until :meth:`close`."""

    def __init__(self, on_post: PostHandler) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, headers, body = on_post(self.path, dict(self.headers.items()), raw)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
