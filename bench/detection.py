"""Detector throughput: all detectors together over synthetic windows, on one core.

Usage: python bench/detection.py [--flows-per-window N] [--windows W] [--seed S] [--repeat R]

The flows are a realistic mix (mostly benign TCP/UDP/ICMP between many hosts,
DNS with a pool of names) plus injected scans, floods, brute force, tunnelling
and beacons, so every detector has work to do and state to carry across
windows. Prints flows/s per detector and for all of them together (best of
``--repeat`` rounds with fresh detectors, since other processes share the machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netmon_exporter.config import DetectorsConfig  # noqa: E402
from netmon_exporter.detectors import REGISTRY, build_detector  # noqa: E402
from netmon_exporter.detectors.features import clear_cache  # noqa: E402
from netmon_exporter.flow_schema import (  # noqa: E402
    FLOWS,
    RECORD_SLICE,
    RECORD_WHOLE,
    FlowBatch,
    make_batch,
    view,
)

_PREFIX = np.frombuffer(b"\x00" * 10 + b"\xff\xff", dtype=np.uint8)


def _addrs(ints: np.ndarray) -> np.ndarray:
    raw = np.zeros((len(ints), 16), dtype=np.uint8)
    raw[:, :12] = _PREFIX
    raw[:, 12:] = ints.astype(">u4").view(np.uint8).reshape(-1, 4)
    return raw.view("V16").ravel()


def synthetic_window(rng: np.random.Generator, n: int, start: float, length: float) -> FlowBatch:
    """Build ``n`` flows in [start, start+length): benign mix plus a sprinkling of attacks."""
    clients = 0x0A000000 + rng.integers(1, 20000, n)
    servers = 0xC0A80100 + rng.zipf(1.5, n) % 5000
    proto = rng.choice(np.array([6, 17, 1], dtype=np.uint8), n, p=[0.74, 0.25, 0.01])
    dport = rng.choice(
        np.array([443, 80, 53, 22, 8080, 123, 993]), n, p=[0.5, 0.15, 0.2, 0.02, 0.05, 0.05, 0.03]
    )
    dport = np.where(proto == 1, 0x0800, dport)
    fwd = rng.integers(2, 60, n).astype(float)
    bwd = np.maximum(fwd + rng.integers(-2, 20, n), 1).astype(float)
    first = start + rng.random(n) * length
    dur = rng.exponential(2.0, n)
    names = np.array([f"host{i}.example{i % 50}.com" for i in range(5000)], dtype=object)
    dns = (proto == 17) & (dport == 53)
    qname = np.where(dns, names[rng.integers(0, 5000, n)], "")
    # attacks: 2% scan probes, 1% flood packets, some brute force
    k = n // 50
    atk = rng.choice(n, 3 * k, replace=False)
    scan, flood, brute = atk[:k], atk[k : 2 * k], atk[2 * k :]
    clients[scan] = 0x0A0000FE
    servers[scan] = 0xC0A80001
    proto[scan] = 6
    dport[scan] = rng.integers(1, 65535, k)
    fwd[scan], bwd[scan] = 1, 0
    servers[flood] = 0xC0A80002
    proto[flood] = 6
    dport[flood] = 80
    fwd[flood], bwd[flood] = 1, 1
    clients[brute] = 0x0A0000FD
    servers[brute] = 0xC0A80003
    proto[brute] = 6
    dport[brute] = 22
    half_open = np.zeros(n, dtype=bool)
    half_open[scan] = True
    half_open[flood] = True
    return make_batch(
        n,
        src_ip=_addrs(clients),
        dst_ip=_addrs(servers),
        src_port=rng.integers(1024, 65535, n),
        dst_port=dport,
        protocol=proto,
        first_ts=first,
        last_ts=first + dur,
        **{
            "Tot Fwd Pkts": fwd,
            "Tot Bwd Pkts": bwd,
            "TotLen Fwd Pkts": np.where(half_open, 0, fwd * 100),
            "TotLen Bwd Pkts": bwd * 500,
            "Flow Duration": dur * 1e6,
            "fwd_syn_cnt": np.where(proto == 6, 1.0, 0.0),
            "bwd_syn_cnt": np.where((proto == 6) & ~half_open, 1.0, 0.0),
            "fwd_rst_cnt": np.zeros(n),
            "bwd_rst_cnt": np.where(half_open & (bwd > 0), 1.0, 0.0),
            "dns_qname": qname,
        },
    )


def with_interim(rng: np.random.Generator, flows: FlowBatch, share: float) -> FlowBatch:
    """Cut ``share`` of the flows as the engine would: a slice row each, the flow as whole.

    The slice holds the flow's packets in this window (half of them, say) and starts at
    a later time; the flow's own row becomes its whole record (``flow_record`` 3).
    """
    n = len(flows)
    cut = np.flatnonzero(rng.random(n) < share)
    kind = np.zeros(n)
    kind[cut] = RECORD_WHOLE
    cols = {k: v for k, v in flows.columns.items()}
    cols["flow_record"] = kind
    slices = {k: v[cut].copy() for k, v in cols.items()}
    slices["flow_record"][:] = RECORD_SLICE
    for name in ("Tot Fwd Pkts", "Tot Bwd Pkts", "TotLen Fwd Pkts", "TotLen Bwd Pkts"):
        slices[name] = np.ceil(slices[name] / 2)
    slices["first_ts"] = slices["first_ts"] + (slices["last_ts"] - slices["first_ts"]) / 2
    return FlowBatch.concat([FlowBatch(cols), FlowBatch(slices)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows-per-window", type=int, default=250_000)
    ap.add_argument("--windows", type=int, default=6)
    ap.add_argument("--length", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="Rounds; the best is reported.")
    ap.add_argument(
        "--interim-share",
        type=float,
        default=0.0,
        help="Share of flows cut at a window boundary (each adds a slice row, as the flow "
        "engine's interim records do; flood detectors read slices, the others whole flows).",
    )
    ap.add_argument(
        "--models",
        action="store_true",
        help="Also time model inference (IsolationForest, RandomForest).",
    )
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    windows = [
        synthetic_window(rng, args.flows_per_window, 1.7e9 + i * args.length, args.length)
        for i in range(args.windows)
    ]
    if args.interim_share > 0:
        windows = [with_interim(rng, w, args.interim_share) for w in windows]
    # what Analyzer.analyse gives each detector: whole flows, or slices (reads = "slices")
    views = [{r: view(w, r) for r in (FLOWS, "slices")} for w in windows]
    per: dict[str, float] = {}
    found: dict[str, int] = {}
    total = float("inf")
    for _ in range(args.repeat):  # fresh detectors each round; best round reported
        detectors = [build_detector(name, DetectorsConfig()) for name in REGISTRY]
        clear_cache()
        round_per = {d.name: 0.0 for d in detectors}
        round_found = {d.name: 0 for d in detectors}
        t_round = 0.0
        for i, batches in enumerate(views):
            ws = 1.7e9 + i * args.length
            t0 = time.perf_counter()
            for d in detectors:
                t = time.perf_counter()
                flows = batches[getattr(d, "reads", FLOWS)]
                round_found[d.name] += len(d.detect(flows, ws, ws + args.length))
                round_per[d.name] += time.perf_counter() - t
            t_round += time.perf_counter() - t0
        for name, sec in round_per.items():
            per[name] = min(per.get(name, float("inf")), sec)
        found = round_found
        total = min(total, t_round)
    n = args.flows_per_window * args.windows
    cut = f", {args.interim_share:.0%} of flows cut (+ a slice row)" if args.interim_share else ""
    print(
        f"detector throughput, {args.windows} windows x {args.flows_per_window:,} flows{cut}, "
        f"1 core, best of {args.repeat} rounds (load average {os.getloadavg()[0]:.2f}):"
    )
    for name in per:
        print(
            f"  {name:<14} {n / max(per[name], 1e-9):>14,.0f} flows/s   {found[name]:>4} detections"
        )
    print(f"  {'ALL':<14} {n / total:>14,.0f} flows/s   {sum(found.values()):>4} detections")
    bench_pipeline(windows, args.length)
    if args.models:
        bench_models(windows[0], rng)
    return 0


def bench_pipeline(windows: list[FlowBatch], length: float) -> None:
    """Time what the daemon does per window: windowing, analysis, the report dict."""
    import tempfile

    from netmon_exporter.analysis import Analyzer
    from netmon_exporter.config import ModelsConfig, WindowsConfig
    from netmon_exporter.window import WindowAggregator

    clear_cache()
    with tempfile.TemporaryDirectory() as tmp:
        agg = WindowAggregator(WindowsConfig(length_seconds=length), Path(tmp))
        analyzer = Analyzer(DetectorsConfig(), ModelsConfig(), Path(tmp))
        t = time.perf_counter()
        closed = []
        for flows in windows:
            closed += agg.add(flows)
        closed += agg.flush()
        for w in closed:
            agg.report_dict(w, analyzer.analyse(w.flows, w.start, w.end))
        seconds = time.perf_counter() - t
    n = sum(len(view(w, FLOWS)) for w in windows)  # flows, not their slice rows
    print(f"  {'windows+analysis+report':<24} {n / seconds:>10,.0f} flows/s")


def bench_models(flows: FlowBatch, rng: np.random.Generator) -> None:
    """Time batched inference of both model kinds on one window."""
    from netmon_exporter.models import train_anomaly, train_classifier

    sample = flows.take(rng.choice(len(flows), 20_000, replace=False))
    labels = np.where(np.asarray(sample["TotLen Fwd Pkts"]) == 0, "probe", "benign")
    anomaly = train_anomaly(sample, data_digest="bench")
    classifier, _ = train_classifier(sample, labels, data_digest="bench", n_estimators=100)
    print(f"model inference on {len(flows):,} flows (default sizes), 1 core:")
    for name, fn in (("anomaly score", anomaly.score), ("classify", classifier.classify)):
        t = time.perf_counter()
        fn(flows)
        print(f"  {name:<14} {len(flows) / (time.perf_counter() - t):>14,.0f} flows/s")


if __name__ == "__main__":
    raise SystemExit(main())
