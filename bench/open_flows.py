"""What an open flow costs in the flow table, with and without seeds (issue 12 item 3).

Feeds a capture to a ``FlowTable`` (the worker's flow engine, default timeouts, no cap)
in one fresh process per case and prints, for the flows still open at the end: their
number, the bytes of the rows they use (``FlowTable.state_bytes``: keys, links, seeds,
accumulator rows, DNS rows, hash table) and the process's RSS growth over the run
(which adds the arrays' growth headroom, the hash table's free slots and the reader's
buffers; large blocks mapped and free memory released, as a worker does), each per
open flow. Two captures:

* ``flood``: a spoofed-source SYN flood (``tests/flood_capture.py``), every flow one
  packet and open (the idle timeout is not reached): what a flood or a scan leaves open;
* ``synth``: ``bench/synth.py``'s ordinary traffic (TCP sessions, DNS, UDP, ICMP), the
  first half of the file, so that the flows open at that point are a mix;
* ``dns``: a busy resolver's exchanges (``tests/dns_capture.py``: answered, NXDOMAIN,
  unanswered, retried, answers alone, long names), all open: what a site's DNS leaves
  open for the 120-s idle timeout;
* ``idle``: TCP connections that complete their handshake (SYN, SYN-ACK, ACK) and stay
  idle (``tests/flood_capture.py --handshakes``), all open: a client holding a pool of
  idle connections, or a connection flood from real sources.

Each case runs with seeds (the default) and without them (``no``: each flow gets its
row from its first packet, as before seeds; the records are the same, see
tests/test_flow_seeds.py)::

    python bench/open_flows.py [--flows 1000000] [--packets 1000000] [--exchanges 200000]
                               [--connections 300000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"

_CASE = """
import json, sys
from pathlib import Path
from netmon_exporter.capture.pcap_reader import CaptureReader
from netmon_exporter.flows.flow_table import FlowTable
from netmon_exporter.heap import map_large_blocks, release_free_memory

map_large_blocks()  # as a worker does

def rss():
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024

path, seeds, limit = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
args = (120.0, 3600.0, 5.0, 2.0, 0, 60.0)  # flows.* defaults, no cap, 60-s windows
warm = FlowTable(*args, seeds=seeds)  # compiled code loaded before the baseline
for c in CaptureReader(path, max_packets=1000):
    warm.add(c.P, c.PE, c.buf)
    break
warm.finish()
table = FlowTable(*args, seeds=seeds)
base = rss()
seen = 0
for c in CaptureReader(path, max_packets=1 << 15):
    table.add(c.P, c.PE, c.buf)
    seen += c.P.shape[0]
    if seen >= limit:
        break
release_free_memory()  # as a worker does after a big file
n = max(table.open_flows, 1)
print(json.dumps({"open": table.open_flows, "rows": table.state_bytes() / n,
                  "rss": (rss() - base) / n, "packets": seen}))
"""


def _generated(path: Path, *args: str) -> Path:
    """``path``, written by ``python -m ARGS... PATH ...`` (a tests/ generator) unless there."""
    if not path.exists():
        module, *rest = args
        subprocess.run(
            [sys.executable, "-m", module, str(path), *rest],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return path


def _flood(out: Path, flows: int) -> Path:
    return _generated(out / f"flood-{flows}.pcap", "tests.flood_capture", str(flows))


def _synth(out: Path, packets: int) -> Path:
    path = out / f"synth-{packets}.pcap"
    if not path.exists():
        sys.path.insert(0, str(HERE))
        from synth import write_pcap  # type: ignore[import-not-found]

        write_pcap(path, packets)
    return path


def _dns(out: Path, count: int) -> Path:
    return _generated(out / f"dns-{count}.pcap", "tests.dns_capture", str(count), "100")


def _idle(out: Path, conns: int) -> Path:
    return _generated(out / f"idle-{conns}.pcap", "tests.flood_capture", str(conns), "--handshakes")


def _case(path: Path, seeds: bool, limit: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CASE, str(path), "1" if seeds else "0", str(limit)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=1_000_000, help="flood size (one-packet flows)")
    ap.add_argument("--packets", type=int, default=1_000_000, help="synthetic capture size")
    ap.add_argument("--exchanges", type=int, default=200_000, help="DNS exchanges (in 100 s)")
    ap.add_argument("--connections", type=int, default=300_000, help="idle connections (in 100 s)")
    ap.add_argument("--out", type=Path, default=OUT, help="captures (default: bench/out)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cases = [
        ("flood", _flood(args.out, args.flows), args.flows),
        ("synth", _synth(args.out, args.packets), args.packets // 2),
        ("dns", _dns(args.out, args.exchanges), 4 * args.exchanges),
        ("idle", _idle(args.out, args.connections), 3 * args.connections),
    ]
    print(
        f"{'capture':8} {'seeds':>5} {'packets':>9} {'open flows':>11} {'rows B/flow':>12} "
        f"{'RSS B/flow':>11}"
    )
    for name, path, limit in cases:
        for seeds in (True, False):
            r = _case(path, seeds, limit)
            print(
                f"{name:8} {'yes' if seeds else 'no':>5} {int(r['packets']):>9,} "
                f"{int(r['open']):>11,} {r['rows']:>12,.0f} {r['rss']:>11,.0f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
