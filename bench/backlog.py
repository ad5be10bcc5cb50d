"""How long the daemon takes to work off a backlog of N small files, and what it costs
the main process per file (does a round's cost grow with the files still waiting?).

Each case writes N tiny captures (ten UDP packets each, 5 s of capture time apart) into a
fresh site's capture directory before the daemon starts, as after an outage, then
starts the real daemon (2 workers, ``bench/daemon.py``'s settings) and times it until
``netmon_files_processed_total`` counts every file, with the main process's CPU::

    python bench/backlog.py loose:1000 loose:12000 series:4000 hosts2000:4000

Kinds: ``loose`` (names of no rotation series: ``host-3fz.pcap``, each file on its
own), ``series`` (one series, ``s0-<epoch>.pcap``), ``hostsS`` (S series,
``<host>-<epoch>.pcap``, the files dealt round-robin). ``--profile`` records the main
process with py-spy (``bench/out/backlog-<kind>-<n>.txt``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import daemon as bench  # noqa: E402

T0 = 1_700_000_000


def tiny_pcap(path: Path, t0: float, packets: int = 10) -> None:
    """Ten DNS-sized UDP datagrams, one flow per file."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(packets):
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            28,
            1,
            0,
            64,
            17,
            0,
            bytes([10, 0, 0, 1]),
            bytes([10, 0, 0, 2]),
        )
        frame = b"\x00" * 12 + b"\x08\x00" + ip + struct.pack("!HHHH", 40000 + i, 53, 8, 0)
        ts = t0 + i * 0.01
        out.append(struct.pack("<IIII", int(ts), int(ts % 1 * 1e6), len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def name_of(kind: str, i: int) -> str:
    if kind == "series":
        return f"s0-{T0 + 5 * i}.pcap"
    if kind.startswith("hosts"):
        h = i % int(kind[5:])
        return f"h{chr(97 + h % 26)}{chr(97 + h // 26 % 26)}{chr(97 + h // 676)}-{T0 + 5 * i}.pcap"
    assert kind == "loose", kind
    return f"host-{i:x}z.pcap".replace("0", "o")  # no run of digits: no series


def run(kind: str, n: int, workers: int, profile: bool) -> None:
    site = bench.OUT / f"backlog-{kind}-{n}"
    shutil.rmtree(site, ignore_errors=True)
    (site / "captures").mkdir(parents=True)
    (site / "config.yaml").write_text(bench.CONFIG.format(workers=workers, carry="true"))
    for i in range(n):
        p = site / "captures" / name_of(kind, i)
        tiny_pcap(p, T0 + 5 * i)
        os.utime(p, (T0 + 5 * i + 5, T0 + 5 * i + 5))
    d = bench.Daemon(site).start()
    assert d.proc is not None
    try:
        spy = (
            bench.start_py_spy(d.proc.pid, bench.OUT / f"backlog-{kind}-{n}.txt", gil=True)
            if profile
            else None
        )
        start, cpu0 = time.perf_counter(), bench.cpu_seconds(d.proc.pid) or 0.0
        marks: dict[float, float] = {}
        done = 0.0
        while done < n and time.perf_counter() - start < 1800:
            done = bench.total(d.metrics(), "netmon_files_processed_total")
            for q in (0.25, 0.5, 0.75, 1.0):
                if done >= q * n:
                    marks.setdefault(q, time.perf_counter() - start)
            time.sleep(0.2)
        wall = time.perf_counter() - start
        cpu = (bench.cpu_seconds(d.proc.pid) or 0.0) - cpu0
        if spy is not None:
            bench.stop_py_spy(spy)
        quarters = "  ".join(f"{q:.0%} {s:.1f} s" for q, s in sorted(marks.items()))
        print(
            f"{kind:10} {n:7,} files {wall:7.1f} s {wall / n * 1e3:6.2f} ms/file   main CPU "
            f"{cpu:6.1f} s {cpu / n * 1e3:6.2f} ms/file   done at {quarters}"
            + ("" if done >= n else f"   TIMEOUT at {done:.0f}"),
            flush=True,
        )
    finally:
        d.stop()
        shutil.rmtree(site, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="+", help="KIND:N, e.g. loose:4000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    for case in a.cases:
        kind, n = case.split(":")
        run(kind, int(n), a.workers, a.profile)


if __name__ == "__main__":
    main()
