"""``netmon-exporter flows FILE... -o OUT.csv``: captures in, one CICFlowMeter-style CSV out.

Like ``cicflowmeter -f FILE -c OUT.csv``, but for several files at once (each
treated as a separate capture unless ``--rotated`` says they are consecutive
files of one capture), with a one-line summary and a progress bar on a terminal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from ..pipeline import CaptureFormatError, FileResult, FlowSettings, finish_carry, process_file

PROGRESS_MIN_BYTES = 16 << 20  # on a terminal, without --progress: no bar for small files


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``flows`` sub-command."""
    p = subparsers.add_parser(
        "flows",
        help="extract CICFlowMeter-compatible flows from captures into a CSV",
        description="Extract bidirectional flows with CICFlowMeter features from pcap, "
        "pcapng or pcap.gz files (or normalise flow CSVs) into one CSV.",
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        type=Path,
        help="capture files (pcap, pcapng, pcap.gz) or flow CSVs",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT.csv",
        help="CSV file to write (replaced atomically)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="end a flow after this long without packets (default 120)",
    )
    p.add_argument(
        "--active-timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="end a flow this long after its first packet (default 3600)",
    )
    p.add_argument(
        "--activity-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="gap that separates active periods for Active/Idle features (default 5)",
    )
    p.add_argument(
        "--rotated",
        action="store_true",
        help="the files are consecutive parts of one capture: continue open flows",
    )
    p.add_argument(
        "--tunnel-depth",
        type=int,
        choices=(0, 1, 2),
        default=2,
        help="tunnels (IP in IP, GRE, ERSPAN, VXLAN, Geneve) opened to reach the inner "
        "packet; 0: every packet is the flow of its outer header (default 2)",
    )
    p.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress bar on stderr for every file, terminal or not, and leave its "
        "last line (default: on a terminal, for files of 16 MB or more)",
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show a progress bar"
    )
    p.set_defaults(func=run)


class _Bar:
    """A one-line progress bar on stderr for one file.

    ``keep``: end with the bar at 100% on its own line (``--progress``), else erase it.
    """

    def __init__(self, name: str, total: int, out: TextIO, keep: bool = False) -> None:
        self.name, self.total, self.out, self.keep = name, max(total, 1), out, keep
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.update(0)

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < 0.2 and 0 < done < self.total:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        width = 30
        fill = int(frac * width)
        rate = done / max(now - self.t0, 1e-9) / 1e6
        self.out.write(
            f"\r{self.name[:30]:30} [{'#' * fill}{'.' * (width - fill)}] "
            f"{frac * 100:5.1f}% {rate:6.1f} MB/s"
        )
        self.out.flush()

    def close(self, finished: bool = True) -> None:
        if self.keep:
            if finished:  # a flow CSV read as input reports no progress on the way
                self.update(self.total)
            self.out.write("\n")
        else:
            self.out.write("\r" + " " * 80 + "\r")
        self.out.flush()


def _settings(args: argparse.Namespace) -> FlowSettings | str:
    for name in ("idle_timeout", "active_timeout", "activity_timeout"):
        if getattr(args, name) <= 0:
            return f"--{name.replace('_', '-')} must be positive"
    return FlowSettings(
        idle_timeout_seconds=args.idle_timeout,
        active_timeout_seconds=args.active_timeout,
        activity_timeout_seconds=args.activity_timeout,
        carry_across_files=args.rotated,
        tunnel_depth=args.tunnel_depth,
        read_ahead=True,  # with the CSV written on a thread too: up to three cores busy
    )


def run(args: argparse.Namespace) -> int:
    """Process every file into ``args.output``; print a summary; 0 on success."""
    settings = _settings(args)
    if isinstance(settings, str):
        print(f"netmon-exporter flows: {settings}", file=sys.stderr)
        return 2
    for f in args.files:
        if not f.is_file():
            print(f"netmon-exporter flows: {f}: no such file", file=sys.stderr)
            return 1
    out = args.output
    if not out.parent.is_dir():
        print(
            f"netmon-exporter flows: {out.parent}: output directory does not exist", file=sys.stderr
        )
        return 1
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    # --progress: every file, whatever its size; on a terminal by default: big files only
    min_bytes = 0 if args.progress else PROGRESS_MIN_BYTES
    from ..flows.flow_csv import FlowCsvWriter  # noqa: PLC0415

    t0 = time.perf_counter()
    packets = flows = 0
    writer = FlowCsvWriter(out, background=True)  # formats rows while the next are parsed
    carry: bytes | None = None
    try:
        for i, path in enumerate(args.files):
            last = i == len(args.files) - 1
            size = path.stat().st_size
            bar = (
                _Bar(path.name, size, sys.stderr, keep=bool(args.progress))
                if show and size >= min_bytes
                else None
            )
            finished = False
            try:
                res: FileResult = process_file(
                    path,
                    settings,
                    carry=carry,
                    final=last or not args.rotated,
                    collect=False,
                    on_flows=writer.write,
                    on_progress=bar.update if bar else None,
                )
                finished = True
            finally:
                if bar:
                    bar.close(finished)
            carry = res.carry
            packets += res.packets
            flows += res.flow_count
        if carry is not None:
            batch = finish_carry(carry, settings)
            writer.write(batch)
            flows += len(batch)
        writer.close()
    except CaptureFormatError as exc:
        writer.abort()
        print(f"netmon-exporter flows: {exc} ({exc.reason})", file=sys.stderr)
        return 1
    except OSError as exc:
        writer.abort()
        print(
            f"netmon-exporter flows: {exc.filename or out}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        writer.abort()
        print("netmon-exporter flows: interrupted", file=sys.stderr)
        return 130
    secs = time.perf_counter() - t0
    rate = packets / secs if secs > 0 else 0.0
    print(f"{packets} packets, {flows} flows in {secs:.2f} s ({rate:,.0f} packets/s) -> {out}")
    sys.stdout.flush()
    return 0
