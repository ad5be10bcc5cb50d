"""Closed windows are analysed on their own thread (runtime/windows.py), in order, one
config at a time: a reload's swap waits for the window being analysed."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from netmon_exporter.analysis import WindowAnalysis
from netmon_exporter.flow_schema import FlowBatch
from netmon_exporter.metrics import build_metrics
from netmon_exporter.runtime.windows import Windows
from netmon_exporter.window import ClosedWindow


class _Analyzer:
    def __init__(self) -> None:
        self.config = "old"
        self.seen: list[tuple[float, str, str]] = []
        self.started = threading.Event()

    def analyse(self, flows: FlowBatch, start: float, end: float) -> WindowAnalysis:
        self.started.set()
        before = self.config
        if start == 60.0:
            raise RuntimeError("a detector failed")
        time.sleep(0.2)  # a large window: a reload arriving now must wait
        self.seen.append((start, before, self.config))
        return WindowAnalysis([], {}, np.zeros(0), len(flows), 0.2)


def _windows() -> tuple[Windows, _Analyzer, list[float], object]:
    analyzer = _Analyzer()
    parts = SimpleNamespace(analyzer=analyzer, analysis_lock=threading.Lock())
    reported: list[float] = []
    alerts = SimpleNamespace(triage=lambda w, a: SimpleNamespace(findings=a.detections))
    reports = SimpleNamespace(submit=lambda w, a: reported.append(w.start))
    m = build_metrics(CollectorRegistry())
    return Windows(parts, m, alerts, reports, 0.0), analyzer, reported, m  # type: ignore[arg-type]


def _window(start: float) -> ClosedWindow:
    return ClosedWindow(start, start + 60.0, FlowBatch.empty())


def test_windows_are_analysed_in_order_off_the_daemon_thread() -> None:
    windows, analyzer, reported, m = _windows()
    windows.start()
    windows.close(_window(0.0))
    assert reported == []  # the daemon thread did not wait for its 0.2 s analysis
    for start in (60.0, 120.0, 180.0):
        windows.close(_window(start))
    assert windows.drain(time.monotonic() + 10)
    # in order; the window whose analysis failed is counted, the rest go on
    assert reported == [0.0, 120.0, 180.0]
    assert m.errors.labels("internal")._value.get() == 1  # type: ignore[attr-defined]
    # after the drain (shutdown), a window is analysed where it closes
    windows.close(_window(240.0))
    assert reported[-1] == 240.0


def test_closed_windows_awaiting_analysis_are_counted_with_their_age() -> None:
    windows, analyzer, reported, _ = _windows()
    assert windows.backlog() == (0, 0.0)
    windows.start()
    windows.close(_window(0.0))
    windows.close(_window(120.0))
    assert analyzer.started.wait(5)
    waiting, age = windows.backlog()  # one being analysed, one queued behind it
    assert waiting == 2 and 0.0 <= age < 5.0
    time.sleep(0.05)
    assert windows.backlog()[1] > age  # the oldest keeps ageing until it is done
    assert windows.drain(time.monotonic() + 10)
    assert reported == [0.0, 120.0] and windows.backlog() == (0, 0.0)
    with pytest.raises(RuntimeError):  # analysed where it closes, and failing there
        windows.close(_window(60.0))
    assert windows.backlog() == (0, 0.0)


def test_a_reload_swaps_components_between_two_analyses() -> None:
    windows, analyzer, reported, _ = _windows()
    windows.start()
    windows.close(_window(0.0))
    assert analyzer.started.wait(5)
    with windows.parts.analysis_lock:  # what Reloader._apply does
        analyzer.config = "new"
    windows.close(_window(120.0))
    assert windows.drain(time.monotonic() + 10)
    # the window under analysis when the reload came saw one config, whole
    assert analyzer.seen == [(0.0, "old", "old"), (120.0, "new", "new")]


def test_without_a_running_analysis_thread_windows_are_analysed_where_they_close() -> None:
    windows, _, reported, _ = _windows()
    windows.close(_window(0.0))  # not started yet: at once, on this thread
    assert reported == [0.0]
    windows.start()
    windows._queue.put(None)  # the thread ends as if it had died ...
    assert windows._thread is not None
    windows._thread.join(5)
    for start in (60.0 * k for k in range(2, 6)):  # ... and the queue never blocks the daemon
        windows.close(_window(start))
    assert reported == [0.0, 120.0, 180.0, 240.0, 300.0]
