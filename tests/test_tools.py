"""Offline tooling (netmon_exporter.tools) stays out of the daemon's process."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import netmon_exporter.daemon
import netmon_exporter.cli
print(json.dumps(sorted(m for m in sys.modules if m.startswith("netmon_exporter."))))
"""


def test_daemon_never_imports_the_tools_package() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(proc.stdout)
    assert "netmon_exporter.daemon" in loaded
    assert [m for m in loaded if m.startswith("netmon_exporter.tools")] == []
