"""Hash flooding the flow table: crafted colliding flows against as many ordinary ones.

``tests/colliding_flows.py`` writes IPv6 SYNs from sources whose flow keys shared one slot
of the flow table's former hash (8192 sources of one /64 a source port, no search
needed), and as many SYNs from sources that never did. Each capture goes through the
flow engine in process (``process_file``, default settings, after one warm-up run), and
the seconds are printed side by side, best of ``--rounds``. With ``--root DIR`` the
engine is the checkout at DIR (the generator stays this one's)::

    python bench/hash_flood.py [--flows 16384 65536 131072] [--rounds 3] [--root DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, nargs="+", default=[16384, 65536, 131072])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--root", type=Path, default=HERE.parent)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from tests.colliding_flows import sources, syn_frames

    sys.path.insert(0, str(args.root.resolve()))
    for name in [m for m in sys.modules if m.startswith("netmon_exporter")]:
        del sys.modules[name]
    from netmon_exporter.pipeline import FlowSettings, process_file

    print(f"engine: {args.root.resolve()}")
    print(f"{'flows':>8} {'ordinary s':>11} {'colliding s':>12} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.flows:
            paths = {}
            for kind, spread in (("ordinary", True), ("colliding", False)):
                paths[kind] = Path(tmp) / f"{kind}-{n}.pcap"
                paths[kind].write_bytes(syn_frames(*sources(n, spread=spread)))
            best = {}
            process_file(paths["ordinary"], FlowSettings())  # warm-up
            for kind, path in paths.items():
                times = []
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    res = process_file(path, FlowSettings())
                    times.append(time.perf_counter() - t0)
                    assert res.flow_count == n, (kind, res.flow_count)
                best[kind] = min(times)
            ratio = best["colliding"] / best["ordinary"]
            print(f"{n:>8} {best['ordinary']:>11.3f} {best['colliding']:>12.3f} {ratio:>5.1f}x")


if __name__ == "__main__":
    main()
