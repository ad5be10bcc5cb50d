"""A worker's work on a rotated capture's files, in one process (issue 12 item 2).

Runs every file of a split (``bench/daemon.py`` cuts them: 122 files of 5 s for the
1 M-packet capture) through what a daemon worker does with it, in series order: flows,
features and the flow CSV, the flow sample sent to the main process, the open flows
written to a carry file and the table kept for the next file (the previous carry file
removed); the workers' memory settings (``heap.map_large_blocks``). After one warm-up
pass it prints, per pass, the wall and CPU seconds, minor page faults and peak RSS, and
the carries' share::

    python bench/worker_files.py [--split DIR] [--passes 2] [--root DIR]

``--root DIR`` runs the engine of another checkout (its kernels built there).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SPLIT = HERE / "out" / "daemon-split-synth-1000000-5s-2series"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--root", type=Path, default=HERE.parent)
    args = ap.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    from netmon_exporter.flow_sample import FILE_ROW_CAP, FlowSample
    from netmon_exporter.heap import map_large_blocks
    from netmon_exporter.ingest import carry_store
    from netmon_exporter.pipeline import FlowSettings, process_file

    map_large_blocks()  # as a worker does
    files = sorted(args.split.glob("*.pcap"))
    if not files:
        raise SystemExit(f"no files in {args.split}: run bench/daemon.py once to cut them")
    series: dict[str, list[Path]] = {}
    for f in files:
        series.setdefault(f.name.split("-")[0], []).append(f)
    settings = FlowSettings(interim_seconds=60.0)
    out = Path(tempfile.mkdtemp(prefix="netmon-worker-files-"))
    carry_s = [0.0]
    previous: list[bytes] = []

    def keep(table):  # noqa: ANN001, ANN202 - the worker's save_carry
        t0 = time.perf_counter()
        ref = carry_store.save_arrays(out, 1, table.state_arrays())
        if previous:
            carry_store.remove(out, previous.pop())
        previous.append(ref)
        carry_s[0] += time.perf_counter() - t0
        return table

    def one_pass() -> None:
        for fs in series.values():
            carry = None
            for f in fs:
                sample = FlowSample(FILE_ROW_CAP)
                res = process_file(
                    f,
                    settings,
                    carry=carry,
                    final=False,
                    csv_path=out / f"{f.name}.csv",
                    collect=False,
                    on_flows=sample.add,
                    save_carry=keep,
                )
                carry = res.carry

    print(f"engine: {args.root.resolve()}; {len(files)} files in {len(series)} series")
    one_pass()  # warm-up
    for _ in range(args.passes):
        carry_s[0] = 0.0
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        one_pass()
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
        print(
            f"wall {wall:.3f} s  user {r1.ru_utime - r0.ru_utime:.3f} s  "
            f"sys {r1.ru_stime - r0.ru_stime:.3f} s  minflt {r1.ru_minflt - r0.ru_minflt}  "
            f"peak RSS {r1.ru_maxrss / 1024:.0f} MB  carries {carry_s[0]:.3f} s"
        )


if __name__ == "__main__":
    main()
