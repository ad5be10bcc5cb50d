"""Where the daemon's main process spends memory, stage by stage (issue 12 item 3).

Replays rotated captures (as ``bench/daemon.py`` cuts them) through what the daemon's
main process does with the workers' results, in one process and in capture order: each
file's flows are reduced as a worker reduces them (``FlowSample``: the columns analysis
reads, at most ``FILE_ROW_CAP`` rows, the exact tally), added to the window aggregator,
and every closed window is analysed by every detector (default config, no models); at
the end the flows still carried are ended, as when the series go idle. The
workers' own work (parsing, flow tables, carries) runs in a worker process, as in the
daemon, and the reduced rows come back pickled.

For each closed window it prints its flows and the rows it holds for them (whole flows
and slices, thinned to ``ROW_CAP``), the traced heap (``tracemalloc``: numpy's arrays are
traced) before the analysis, the peak during each detector above that, and what the
detectors keep afterwards (their state: contact stores, baselines), so a change to a
stage shows up as a change in its own column::

    python bench/main_memory.py                  # the 3 M-packet SYN/RST capture's split
    python bench/main_memory.py --split DIR --files 40
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from netmon_exporter.analysis import Analyzer  # noqa: E402
from netmon_exporter.config import DetectorsConfig, ModelsConfig, WindowsConfig  # noqa: E402
from netmon_exporter.flow_sample import FILE_ROW_CAP, FlowSample  # noqa: E402
from netmon_exporter.flow_schema import FlowBatch  # noqa: E402
from netmon_exporter.pipeline import FlowSettings, finish_carry_rows, process_file  # noqa: E402
from netmon_exporter.window import WindowAggregator  # noqa: E402

MIB = 1 << 20
_NAME = re.compile(r"^s(\d+)-(\d+)\.pcap$")


def _files(split: Path) -> list[tuple[int, int, Path]]:
    """(epoch, series, path) of the split's files, in capture order."""
    out = []
    for p in split.iterdir():
        m = _NAME.match(p.name)
        if m:
            out.append((int(m.group(2)), int(m.group(1)), p))
    return sorted(out)


class _Peaks:
    """The analysis's traced peak (bytes, kept across the detectors' resets of the peak)
    and each detector's own (MiB above the heap at its start)."""

    def __init__(self) -> None:
        self.analysis = 0
        self.detectors: dict[str, float] = {}

    def start(self) -> None:
        tracemalloc.reset_peak()
        self.analysis = 0

    def note(self) -> int:
        """Keep the peak so far; return it."""
        self.analysis = max(self.analysis, tracemalloc.get_traced_memory()[1])
        return self.analysis


class _Traced:
    """Wrap a detector: record its traced peak above the heap at its start."""

    def __init__(self, det: object, peaks: _Peaks) -> None:
        self._det, self._peaks = det, peaks

    def __getattr__(self, name: str) -> object:
        return getattr(self._det, name)

    def detect(self, flows: FlowBatch, start: float, end: float) -> list:
        self._peaks.note()  # the peak is reset here: what came before is kept
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = self._det.detect(flows, start, end)  # type: ignore[attr-defined]
        peak = tracemalloc.get_traced_memory()[1]
        self._peaks.detectors[self._det.name] = (peak - base) / MIB  # type: ignore[attr-defined]
        self._peaks.note()
        return out


def _reduce(path: Path, settings: FlowSettings, carry: bytes | None) -> tuple[object, bytes | None]:
    """A worker's part: the file's flows as the rows and tally analysis gets, the carry."""
    sample = FlowSample(FILE_ROW_CAP)
    result = process_file(
        path, settings, carry=carry, final=False, collect=False, on_flows=sample.add
    )
    return sample.result(), result.carry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--split",
        type=Path,
        default=HERE / "out" / "daemon-split-synth-3000000-scan-5s-2series",
        help="directory of s<series>-<epoch>.pcap files (bench/daemon.py's split)",
    )
    ap.add_argument("--files", type=int, default=0, help="only the first N files (0: all)")
    args = ap.parse_args()
    files = _files(args.split)
    if args.files:
        files = files[: args.files]
    windows = WindowsConfig()
    settings = FlowSettings(interim_seconds=windows.length_seconds)
    tracemalloc.start(1)
    with tempfile.TemporaryDirectory(prefix="netmon-main-memory-") as tmp:
        analyzer = Analyzer(DetectorsConfig(), ModelsConfig(), Path(tmp))
        peaks = _Peaks()
        analyzer._detectors = {n: _Traced(d, peaks) for n, d in analyzer._detectors.items()}  # type: ignore[misc]
        agg = WindowAggregator(windows, Path(tmp) / "windows")
        carries: dict[int, bytes | None] = {}
        names = list(analyzer._detectors)
        print(f"{len(files)} files from {args.split}; MiB traced by tracemalloc")
        head = f"{'window':>6} {'flows':>8} {'rows':>8} {'held':>7} {'analysis':>8} {'after':>7}"
        print(head + "".join(f" {n[:12]:>12}" for n in names))
        t0 = time.perf_counter()

        def analyse(closed: list) -> None:
            while closed:
                w = closed.pop(0)
                held = tracemalloc.get_traced_memory()[0] / MIB
                peaks.start()
                analyzer.analyse(w.flows, w.start, w.end)
                top = peaks.note() / MIB
                rows, start = len(w.flows), int(w.start) % 100_000
                flows = getattr(w.flows, "flows_total", rows)
                del w
                after = tracemalloc.get_traced_memory()[0] / MIB
                cells = "".join(f" {peaks.detectors.get(n, 0.0):12.1f}" for n in names)
                print(f"{start:>6} {flows:>8} {rows:>8} {held:7.1f} {top:8.1f} {after:7.1f}{cells}")

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
            for _, series, path in files:
                rows, carries[series] = pool.submit(
                    _reduce, path, settings, carries.get(series)
                ).result()
                analyse(agg.add(rows))  # type: ignore[arg-type]
                del rows
        for carry in carries.values():  # the series went idle: their open flows end
            if carry is not None:
                analyse(agg.add(finish_carry_rows(carry, settings)))
        analyse(agg.flush())
        print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
