"""Reload in two steps: prepare changes nothing that runs, commit swaps in one step (issue 10)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from netmon_exporter.analysis import Analyzer
from netmon_exporter.config import DetectorsConfig, ModelsConfig
from netmon_exporter.daemon import ComponentErrors


def test_prepare_changes_nothing_until_commit(tmp_path: Path) -> None:
    cfg = DetectorsConfig()
    a = Analyzer(cfg, ModelsConfig(), tmp_path)
    before = {d.name: d for d in a.detectors}
    new = dataclasses.replace(cfg, beacon=dataclasses.replace(cfg.beacon, enabled=False))
    setup = a.prepare(new, ModelsConfig())
    assert {d.name: d for d in a.detectors} == before  # nothing running changed
    assert "beacon" not in setup.detectors
    a.commit(setup)
    after = {d.name: d for d in a.detectors}
    assert "beacon" not in after
    assert after["port_scan"] is before["port_scan"]  # unchanged detectors keep their state


def test_an_error_from_a_call_under_old_settings_is_ignored() -> None:
    errors = ComponentErrors()
    gen = errors.generation("llm")  # a summary starts under the old settings...
    errors.reset("llm")  # ...a reload replaces the summariser...
    errors.report("llm", gen, "old endpoint timed out")  # ...then the old call fails
    assert errors.get("llm") is None
    errors.report("llm", errors.generation("llm"), "new endpoint refused")
    assert errors.get("llm") == "new endpoint refused"


def test_component_errors_are_safe_across_threads() -> None:
    errors = ComponentErrors()

    def writer(name: str) -> None:
        for i in range(2000):
            errors.report(name, errors.generation(name), f"e{i}" if i % 2 else None)
            if i % 100 == 0:
                errors.reset(name)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("llm", "alertmanager") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    value = errors.get("llm")
    assert value is None or value.startswith("e")
