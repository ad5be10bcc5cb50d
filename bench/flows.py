"""Side-by-side flow extraction benchmark: netmon-exporter flows vs nfstream vs cicflowmeter.

Runs every tool as a whole process on the same file, alternating, and prints packets/s,
peak RSS (from ``wait4``) and flow counts, then the ratios. ``tcpdump -r FILE -w
/dev/null`` is the floor. cicflowmeter is far too slow for a million packets, so it
runs on the first ``--cic-packets`` packets (and our tool is run on that slice too, to
compare flow counts). See bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENVS = HERE / ".venvs"
OUT = HERE / "out"
GNU_TIME = "/usr/bin/time"  # GNU time, for each tool's own peak RSS
OUR_PYTHON = Path(os.environ.get("NETMON_PYTHON", ROOT / ".venv" / "bin" / "python"))

# What `netmon-exporter flows` does, with interim records (flows cut at window
# boundaries, as the daemon does): same work, same summary line.
INTERIM_SCRIPT = r"""
import sys, time
from pathlib import Path
t0 = time.perf_counter()
from netmon_exporter.flows.flow_csv import FlowCsvWriter
from netmon_exporter.pipeline import FlowSettings, process_file
writer = FlowCsvWriter(Path(sys.argv[2]))
r = process_file(Path(sys.argv[1]), FlowSettings(interim_seconds=float(sys.argv[3])),
                 collect=False, on_flows=writer.write)
writer.close()
secs = time.perf_counter() - t0
print(f"{r.packets} packets, {r.flow_count} flows in {secs:.2f} s "
      f"({r.packets / secs:,.0f} packets/s) -> {sys.argv[2]}")
"""

NFSTREAM_SCRIPT = r"""
import sys
from nfstream import NFStreamer
n = NFStreamer(source=sys.argv[1], statistical_analysis=True, n_dissections=0).to_csv(
    path=sys.argv[2])
print(n)
"""


@dataclass
class Run:
    tool: str
    packets: int
    seconds: float
    rss_mb: float
    flows: int
    note: str = ""

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0


def ensure_venv(name: str, packages: list[str]) -> Path:
    """Create bench/.venvs/<name> with ``packages`` unless it exists; return its python."""
    py = VENVS / name / "bin" / "python"
    if py.exists():
        return py
    print(f"creating {VENVS / name} with {' '.join(packages)} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENVS / name)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *packages], check=True)
    return py


def measure(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, str]:
    """Run ``cmd``; return (wall seconds, its peak RSS in MB, stdout).

    The RSS comes from GNU time (``%M``), not from our own wait4: a child forked from
    this process would report this process's high-water mark until it exec()s.
    """
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            t0 = time.perf_counter()
            rc = subprocess.run(
                [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd], stdout=fo, stderr=fe, cwd=cwd
            ).returncode
            secs = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"{cmd[0]} failed ({rc}): {err.read_text(errors='replace')[-500:]}")
        rss_kb = float(rss_file.read_text().split()[-1])
        return secs, rss_kb / 1024, out.read_text(errors="replace")


def csv_rows(path: Path, protos: tuple[str, ...] | None = None, col: str = "Protocol") -> int:
    with open(path, newline="") as fh:
        r = csv.reader(fh)
        header = next(r, [])
        if protos is None:
            return sum(1 for _ in r)
        i = header.index(col)
        return sum(1 for row in r if row[i] in protos)


def run_ours(path: Path, out: Path, interim: float = 0.0) -> Run:
    if interim:
        cmd = [str(OUR_PYTHON), "-c", INTERIM_SCRIPT, str(path), str(out), str(interim)]
    else:
        cmd = [str(OUR_PYTHON), "-m", "netmon_exporter", "flows", str(path), "-o", str(out)]
        cmd.append("--no-progress")
    secs, rss, text = measure(cmd, cwd=ROOT)
    m = re.match(r"(\d+) packets, (\d+) flows in ([0-9.]+) s \(([0-9,]+) packets/s\)", text)
    if not m:
        raise RuntimeError(f"unexpected summary: {text!r}")
    return Run(
        f"netmon interim {interim:g}s" if interim else "netmon flows",
        int(m.group(1)),
        secs,
        rss,
        int(m.group(2)),
        note=f"{'in-process' if interim else 'CLI'} says {m.group(4)} packets/s",
    )


def run_nfstream(py: Path, path: Path, out: Path, packets: int) -> Run:
    secs, rss, text = measure([str(py), "-c", NFSTREAM_SCRIPT, str(path), str(out)])
    return Run("nfstream", packets, secs, rss, csv_rows(out))


def run_cicflowmeter(venv: Path, path: Path, out: Path, packets: int) -> Run:
    out.unlink(missing_ok=True)
    secs, rss, _ = measure([str(venv / "bin" / "cicflowmeter"), "-f", str(path), "-c", str(out)])
    flows = csv_rows(out) if out.exists() else 0
    return Run("cicflowmeter", packets, secs, rss, flows, note="on the slice")


def run_tcpdump(path: Path, packets: int) -> Run:
    secs, rss, _ = measure(["tcpdump", "-r", str(path), "-w", "/dev/null"])
    return Run("tcpdump -r (floor)", packets, secs, rss, 0)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--file", type=Path, help="use this capture instead of a synthetic one")
    ap.add_argument(
        "--packets",
        type=int,
        default=1_000_000,
        help="packets in the synthetic capture (default 1,000,000)",
    )
    ap.add_argument(
        "--scan", action="store_true", help="flow-heavy synthetic traffic (one SYN + RST per flow)"
    )
    ap.add_argument(
        "--cic-packets", type=int, default=20_000, help="packets given to cicflowmeter (0: skip it)"
    )
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds (best is kept)")
    ap.add_argument("--skip-nfstream", action="store_true")
    ap.add_argument(
        "--interim",
        type=float,
        default=0.0,
        help="also run our engine cutting flows at windows of this many seconds (the "
        "daemon's interim records; 60 as in its default config)",
    )
    a = ap.parse_args()

    if not Path(GNU_TIME).exists():
        print(
            f"{GNU_TIME} (GNU time) is needed to measure peak RSS: apt-get install time",
            file=sys.stderr,
        )
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    if a.file:
        cap = a.file
    else:
        cap = OUT / f"synth-{a.packets}{'-scan' if a.scan else ''}.pcap"
        if not cap.exists():  # in a child process: keep this one small
            subprocess.run(
                [
                    str(OUR_PYTHON),
                    str(HERE / "synth.py"),
                    str(cap),
                    "--packets",
                    str(a.packets),
                    *(["--scan"] if a.scan else []),
                ],
                check=True,
            )
    size_mb = cap.stat().st_size / 1e6
    nfs_py = None if a.skip_nfstream else ensure_venv("nfstream", ["nfstream"])
    cic_venv = None
    if a.cic_packets:
        ensure_venv("cicflowmeter", ["cicflowmeter", "scapy==2.5.0"])
        cic_venv = VENVS / "cicflowmeter"
    slice_path = OUT / f"{cap.stem}-first{a.cic_packets}.pcap"
    if a.cic_packets and not slice_path.exists():
        subprocess.run(
            ["tcpdump", "-r", str(cap), "-c", str(a.cic_packets), "-w", str(slice_path)],
            check=True,
            capture_output=True,
        )

    # warm the page cache and numba's on-disk cache once (not timed)
    run_ours(slice_path if a.cic_packets else cap, OUT / "warm.csv")
    best: dict[str, Run] = {}
    packets = 0
    for rnd in range(a.rounds):
        runs = [lambda: run_ours(cap, OUT / "ours.csv")]
        if a.interim:
            runs.append(lambda: run_ours(cap, OUT / "ours-interim.csv", a.interim))
        if nfs_py:
            runs.append(lambda: run_nfstream(nfs_py, cap, OUT / "nfstream.csv", 0))
        if cic_venv:
            runs.append(
                lambda: run_cicflowmeter(cic_venv, slice_path, OUT / "cic.csv", a.cic_packets)
            )
        if shutil.which("tcpdump"):
            runs.append(lambda: run_tcpdump(cap, 0))
        order = runs if rnd % 2 == 0 else runs[::-1]
        for fn in order:
            r = fn()
            if r.tool == "netmon flows":
                packets = r.packets
            print(f"  round {rnd + 1}: {r.tool:20} {r.seconds:7.2f} s", flush=True)
            if r.tool not in best or r.seconds < best[r.tool].seconds:
                best[r.tool] = r
    for r in best.values():  # the same file for all but cicflowmeter: ours counted it
        if r.packets == 0:
            r.packets = packets
    ours_slice = run_ours(slice_path, OUT / "ours-slice.csv") if a.cic_packets else None

    print()
    print(
        f"capture: {cap} ({size_mb:.0f} MB, {packets} packets); whole-process times, "
        f"best of {a.rounds}"
    )
    print(
        f"{'tool':22}{'packets':>10}{'seconds':>9}{'packets/s':>12}{'peak RSS':>11}"
        f"{'flows':>9}  note"
    )
    for r in best.values():
        print(
            f"{r.tool:22}{r.packets:>10}{r.seconds:>9.2f}{r.pps:>12,.0f}"
            f"{r.rss_mb:>8.0f} MB{r.flows:>9}  {r.note}"
        )
    ours = best["netmon flows"]
    print()
    inter = next((r for name, r in best.items() if name.startswith("netmon interim")), None)
    if inter is not None:
        print(
            f"interim records / whole flows packets/s: {inter.pps / ours.pps:5.2f}x   "
            f"(flows {inter.flows} vs {ours.flows}; peak RSS {inter.rss_mb:.0f} vs "
            f"{ours.rss_mb:.0f} MB)"
        )
    if "nfstream" in best:
        nf = best["nfstream"]
        print(
            f"netmon / nfstream packets/s:     {ours.pps / nf.pps:6.1f}x   "
            f"(flows {ours.flows} vs {nf.flows})"
        )
    if "cicflowmeter" in best and ours_slice is not None:
        c = best["cicflowmeter"]
        tcp_udp = csv_rows(OUT / "ours-slice.csv", ("6", "17"))
        print(
            f"netmon / cicflowmeter packets/s: {ours.pps / c.pps:6.0f}x   "
            f"(on the {a.cic_packets}-packet slice: our TCP/UDP flows {tcp_udp} vs "
            f"cicflowmeter {c.flows}; it ignores ICMP)"
        )
    if "tcpdump -r (floor)" in best:
        t = best["tcpdump -r (floor)"]
        print(f"tcpdump / netmon packets/s:      {t.pps / ours.pps:6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
