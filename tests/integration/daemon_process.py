"""Run the real daemon as a subprocess on port 0 and talk to it (shared by integration tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

_LISTEN = re.compile(r'msg="Listening on".*?address=(\S+)')


class DaemonProcess:
    """The real ``python -m netmon_exporter`` with its logs collected."""

    def __init__(
        self, config_file: Path, *extra_args: str, env: dict[str, str] | None = None
    ) -> None:
        self.config_file = config_file
        self.args = [
            sys.executable,
            "-m",
            "netmon_exporter",
            f"--config.file={config_file}",
            "--web.listen-address=127.0.0.1:0",
            "--log.format=logfmt",
            *extra_args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> DaemonProcess:
        self.proc = subprocess.Popen(
            self.args,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd=self.config_file.parent,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = _LISTEN.search(line)
                if m:
                    self.address = m.group(1)
                    self.wait_for(
                        lambda: self.get("/-/ready")[0] == 200, timeout=timeout, what="readiness"
                    )
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("daemon did not start:\n" + self.log_text())

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log_text(self) -> str:
        return "\n".join(self.lines)

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Read one sample from /metrics (None if absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        _, body = self.get("/metrics")
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                if s.name == name and (
                    labels is None or all(s.labels.get(k) == v for k, v in labels.items())
                ):
                    return float(s.value)
        return None

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition") -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.log_text()[-5000:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                "daemon did not stop in time:\n" + self.log_text()[-5000:]
            ) from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
