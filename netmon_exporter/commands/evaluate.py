"""``netmon-exporter evaluate``: measure the detectors (and optionally the models).

Generates labelled scenario captures for several seeds (``scenarios.py``),
runs each through the real flow engine, windows and analyser, and prints
precision and recall per detector; then runs the real captures of a directory
(default ``../shared/pcaps``) and prints their detections next to what is
expected there. With ``--models`` it also trains an anomaly model and a
classifier on scenarios of other seeds and reports their flow-level scores.
Exits 1 when a bar is missed (recall < 0.95, a detection on benign background,
an unexpected or missing detection on the real captures).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis import Analyzer
from ..config import DetectorsConfig, ModelsConfig, WindowsConfig
from ..detection import Detection
from ..flow_schema import FlowBatch
from ..pipeline import CaptureFormatError, FlowSettings, process_file
from ..scenarios import KINDS, SPOOFED, Scenario, Truth, generate, label_flows
from ..window import WindowAggregator

# Detectors whose findings on the real captures are judged (the bar).
JUDGED = ("port_scan", "address_sweep", "syn_flood", "udp_flood", "icmp_flood", "brute_force")
# What the real captures of ../shared/pcaps are known to contain.
EXPECTED_REAL: dict[str, dict[str, int]] = {
    "synscan.pcap": {"port_scan": 1},
    "synflood-spoofed.pcap": {"syn_flood": 1},
}
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".pcap.gz", ".csv")
RECALL_BAR = 0.95


@dataclass
class DetectorScore:
    truths: int = 0
    found: int = 0
    detections: int = 0
    correct: int = 0

    @property
    def recall(self) -> float:
        return self.found / self.truths if self.truths else float("nan")

    @property
    def precision(self) -> float:
        return self.correct / self.detections if self.detections else float("nan")


@dataclass
class ScenarioResult:
    scenario: Scenario
    flows: int
    detections: list[Detection] = field(default_factory=list)


def analyse_capture(
    path: Path,
    detectors: DetectorsConfig,
    models: ModelsConfig | None = None,
    state_dir: Path | None = None,
    windows: WindowsConfig | None = None,
) -> tuple[FlowBatch, list[Detection]]:
    """Run one capture through flows, windows and a fresh analyser; return flows and detections."""
    result = process_file(path, FlowSettings())
    return result.flows, analyse_flows(result.flows, detectors, models, state_dir, windows)


def analyse_flows(
    flows: FlowBatch,
    detectors: DetectorsConfig,
    models: ModelsConfig | None = None,
    state_dir: Path | None = None,
    windows: WindowsConfig | None = None,
) -> list[Detection]:
    """Window ``flows`` and analyse every window with a fresh analyser."""
    with tempfile.TemporaryDirectory(prefix="netmon-eval-") as tmp:
        analyzer = Analyzer(detectors, models or ModelsConfig(), state_dir or Path(tmp))
        agg = WindowAggregator(windows or WindowsConfig(), Path(tmp) / "windows")
        out: list[Detection] = []
        for w in agg.add(flows) + agg.flush():
            out.extend(analyzer.analyse(w.flows, w.start, w.end).detections)
        return out


def _host(target: str) -> str:
    """Strip a ``:port`` from ``addr:port`` targets (IPv6 addresses keep their colons)."""
    if target.count(":") == 1:
        return target.split(":")[0]
    if target.count(":") > 1 and "." not in target and target.rsplit(":", 1)[-1].isdigit():
        head = target.rsplit(":", 1)[0]
        return head if head.count(":") >= 2 else target
    return target


def matches(d: Detection, t: Truth) -> bool:
    """A detection matches a truth: same detector, right attacker (or victim when spoofed)."""
    if d.detector != t.detector:
        return False
    if t.attacker == SPOOFED:
        return _host(d.target) == t.victim
    if d.source != t.attacker:
        return False
    return not t.victim or _host(d.target) == t.victim or d.target == t.victim


def score(results: Iterable[ScenarioResult]) -> dict[str, DetectorScore]:
    """Per detector: recall over truths, precision over distinct detections per scenario."""
    scores: dict[str, DetectorScore] = {}
    for r in results:
        for t in r.scenario.truths:
            if not t.required:
                continue
            s = scores.setdefault(t.detector, DetectorScore())
            s.truths += 1
            s.found += any(matches(d, t) for d in r.detections)
        distinct: dict[tuple[str, str, str], Detection] = {}
        for d in r.detections:
            distinct.setdefault(d.key, d)
        for d in distinct.values():
            s = scores.setdefault(d.detector, DetectorScore())
            s.detections += 1
            s.correct += any(matches(d, t) for t in r.scenario.truths)
    return scores


def run_scenarios(
    seeds: Sequence[int],
    kinds: Sequence[str],
    work_dir: Path,
    detectors: DetectorsConfig,
    keep_flows: bool = False,
    **generate_args: float,
) -> tuple[list[ScenarioResult], list[FlowBatch]]:
    """Generate and analyse every (seed, kind) scenario (``generate_args``: duration, intensity)."""
    results, flows_kept = [], []
    for seed in seeds:
        for kind in kinds:
            sc = generate(kind, seed, work_dir, **generate_args)
            flows, dets = analyse_capture(sc.path, detectors)
            results.append(ScenarioResult(sc, len(flows), dets))
            if keep_flows:
                flows_kept.append(flows)
            else:
                sc.path.unlink(missing_ok=True)
    return results, flows_kept


def real_captures(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES)
    )


def run_real(directory: Path, detectors: DetectorsConfig) -> list[dict[str, Any]]:
    """Analyse each real capture; compare judged detections with :data:`EXPECTED_REAL`."""
    rows = []
    for path in real_captures(directory):
        try:
            flows, dets = analyse_capture(path, detectors)
        except CaptureFormatError as exc:
            rows.append(
                {
                    "file": path.name,
                    "flows": 0,
                    "detections": {},
                    "expected": {},
                    "ok": True,
                    "note": f"unreadable: {exc}",
                }
            )
            continue
        counts = Counter(d.detector for d in dets)
        expected = EXPECTED_REAL.get(path.name, {})
        judged = {k: v for k, v in counts.items() if k in JUDGED}
        ok = all(judged.get(k, 0) >= n for k, n in expected.items()) and all(
            k in expected for k in judged
        )
        rows.append(
            {
                "file": path.name,
                "flows": len(flows),
                "detections": dict(counts),
                "expected": expected,
                "ok": ok,
                "summaries": [d.summary for d in dets[:3]],
            }
        )
    return rows


# ----------------------------------------------------------------------------- models


def evaluate_models(
    train_seeds: Sequence[int], eval_seeds: Sequence[int], work_dir: Path, kinds: Sequence[str]
) -> dict[str, Any]:
    """Train an anomaly model and a classifier on some seeds, score flows of other seeds."""
    from sklearn.metrics import classification_report, roc_auc_score

    from ..models import train_anomaly, train_classifier

    def labelled(seeds: Sequence[int]) -> tuple[FlowBatch, np.ndarray]:
        batches, labels = [], []
        for seed in seeds:
            for kind in kinds:
                sc = generate(kind, seed, work_dir)
                flows = process_file(sc.path, FlowSettings()).flows
                sc.path.unlink(missing_ok=True)
                batches.append(flows)
                labels.append(label_flows(flows, sc))
        return FlowBatch.concat(batches), np.concatenate(labels)

    train_flows, train_y = labelled(train_seeds)
    test_flows, test_y = labelled(eval_seeds)
    benign_train = train_flows.take(train_y == "benign")
    anomaly = train_anomaly(benign_train, data_digest="scenarios", seed=0)
    scores = anomaly.score(test_flows)
    attack = test_y != "benign"
    threshold = ModelsConfig().anomaly_threshold
    flagged = scores >= threshold
    per_kind = {
        k: round(float(flagged[test_y == k].mean()), 3) for k in sorted(set(test_y.tolist()))
    }
    classifier, _ = train_classifier(train_flows, train_y, data_digest="scenarios", test_size=0.2)
    pred = classifier.classify(test_flows)
    report = classification_report(
        test_y.astype(str), pred.astype(str), output_dict=True, zero_division=0
    )
    return {
        "train_flows": len(train_flows),
        "test_flows": len(test_flows),
        "anomaly": {
            "threshold": threshold,
            "roc_auc": round(float(roc_auc_score(attack, scores)), 4),
            "precision": round(float(attack[flagged].mean()) if flagged.any() else 0.0, 4),
            "recall": round(float(flagged[attack].mean()) if attack.any() else 0.0, 4),
            "flagged_share_by_kind": per_kind,
        },
        "classifier": {
            k: {m: round(float(v[m]), 3) for m in ("precision", "recall", "f1-score")}
            | {"support": int(v["support"])}
            for k, v in report.items()
            if isinstance(v, dict)
        },
    }


# ----------------------------------------------------------------------------- printing


def _f(x: float) -> str:
    return "  n/a" if x != x else f"{x:.3f}"


def format_scores(scores: dict[str, DetectorScore]) -> list[str]:
    lines = [
        f"{'detector':<15}{'truths':>7}{'found':>7}{'recall':>8}{'detections':>12}"
        f"{'correct':>9}{'precision':>11}"
    ]
    for name in sorted(scores):
        s = scores[name]
        lines.append(
            f"{name:<15}{s.truths:>7}{s.found:>7}{_f(s.recall):>8}{s.detections:>12}"
            f"{s.correct:>9}{_f(s.precision):>11}"
        )
    return lines


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="Measure detectors (and models) on generated scenarios and real captures.",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--seeds", type=int, default=5, help="Number of seeds (default 5).")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument(
        "--kinds",
        nargs="+",
        default=list(KINDS),
        choices=KINDS,
        metavar="KIND",
        help=f"Scenario kinds (default: all of {', '.join(KINDS)}).",
    )
    p.add_argument(
        "--pcaps",
        default="../shared/pcaps",
        metavar="DIR",
        help="Directory of real captures (default ../shared/pcaps; '' to skip).",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="Take detector thresholds from this config file."
    )
    p.add_argument(
        "--models",
        action="store_true",
        help="Also train and score the anomaly model and classifier.",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="Where scenario captures are written (default: a temp dir).",
    )
    p.add_argument("--keep", action="store_true", help="Keep the generated captures.")
    p.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    detectors = DetectorsConfig()
    if args.config:
        from ..config import ConfigError, load_config

        try:
            detectors = load_config(args.config, check_paths=False).detectors
        except ConfigError as exc:
            print(f"evaluate: {exc}", file=sys.stderr)
            return 2
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="netmon-scenarios-") as tmp:
        work = args.work_dir or Path(tmp)
        results, _ = run_scenarios(seeds, args.kinds, work, detectors)
        if args.keep and args.work_dir is None:
            print("evaluate: --keep needs --work-dir", file=sys.stderr)
        scores = score(results)
        benign_detections = [
            d for r in results if r.scenario.kind == "benign" for d in r.detections
        ]
        pcaps = Path(args.pcaps) if args.pcaps else None
        real = run_real(pcaps, detectors) if pcaps is not None and pcaps.is_dir() else []
        model_report = (
            evaluate_models([s + 1000 for s in seeds[:2]], seeds[:2], work, args.kinds)
            if args.models
            else None
        )
        if args.work_dir and not args.keep:
            for r in results:
                r.scenario.path.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    missed = [n for n, s in scores.items() if s.truths and s.recall < RECALL_BAR]
    real_bad = [r["file"] for r in real if not r["ok"]]
    ok = not missed and not benign_detections and not real_bad
    if args.json:
        print(
            json.dumps(
                {
                    "seeds": seeds,
                    "kinds": list(args.kinds),
                    "detectors": {
                        n: {
                            "truths": s.truths,
                            "found": s.found,
                            "recall": s.recall,
                            "detections": s.detections,
                            "correct": s.correct,
                            "precision": s.precision,
                        }
                        for n, s in scores.items()
                    },
                    "benign_detections": [d.to_dict() for d in benign_detections],
                    "real_captures": real,
                    "models": model_report,
                    "ok": ok,
                    "seconds": round(seconds, 1),
                },
                indent=2,
                default=str,
            )
        )
        return 0 if ok else 1
    packets = sum(r.scenario.packets for r in results)
    flows = sum(r.flows for r in results)
    print(
        f"Scenario evaluation: {len(seeds)} seeds x {len(args.kinds)} kinds = {len(results)} "
        f"captures, {packets:,} packets, {flows:,} flows"
    )
    print("\n".join(format_scores(scores)))
    print(f"detections on benign-only scenarios: {len(benign_detections)}")
    for d in benign_detections[:5]:
        print(f"  {d.detector}: {d.summary}")
    for r in results:
        for d in r.detections:
            tolerated = [t for t in r.scenario.truths if not t.required and matches(d, t)]
            if tolerated:
                print(
                    f"  tolerated in {r.scenario.kind} seed {r.scenario.seed}: {d.detector}: "
                    f"{d.summary}"
                )
            elif not any(matches(d, t) for t in r.scenario.truths):
                print(
                    f"  false positive in {r.scenario.kind} seed {r.scenario.seed}: "
                    f"{d.detector}: {d.summary}"
                )
        for t in r.scenario.truths:
            if t.required and not any(matches(d, t) for d in r.detections):
                print(f"  missed in {r.scenario.kind} seed {r.scenario.seed}: {t}")
    if not real and args.pcaps:
        print(f"\nReal captures: skipped ({args.pcaps} is not a directory with captures)")
    if real:
        print(f"\nReal captures ({args.pcaps}):")
        print(f"{'file':<30}{'flows':>7}  {'detections':<28}{'expected':<22}ok")
        for row in real:
            dets = ", ".join(f"{k}={v}" for k, v in sorted(row["detections"].items())) or "-"
            exp = ", ".join(f"{k}>={v}" for k, v in row["expected"].items()) or "none"
            print(
                f"{row['file']:<30}{row['flows']:>7}  {dets:<28}{exp:<22}"
                f"{'yes' if row['ok'] else 'NO'}"
            )
    if model_report:
        print(
            f"\nModels (trained on seeds {[s + 1000 for s in seeds[:2]]}, scored on "
            f"{seeds[:2]}; {model_report['train_flows']:,} / {model_report['test_flows']:,} "
            "flows):"
        )
        a = model_report["anomaly"]
        print(
            f"  anomaly (IsolationForest on benign flows): ROC AUC {a['roc_auc']}, at score >= "
            f"{a['threshold']}: precision {a['precision']}, recall {a['recall']}"
        )
        print(
            "    share of flows flagged by kind: "
            + ", ".join(f"{k}={v}" for k, v in a["flagged_share_by_kind"].items())
        )
        print("  classifier (RandomForest on labelled flows), held-out seeds:")
        print(f"    {'class':<20}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}")
        for k, v in model_report["classifier"].items():
            if k in ("accuracy",):
                continue
            print(
                f"    {k:<20}{v['precision']:>10.3f}{v['recall']:>8.3f}{v['f1-score']:>8.3f}"
                f"{v['support']:>9}"
            )
    print(
        f"\nbars: recall >= {RECALL_BAR} for every detector: "
        f"{'met' if not missed else 'MISSED ' + ', '.join(missed)}; benign scenarios quiet: "
        f"{'yes' if not benign_detections else 'NO'}; real captures as expected: "
        f"{'yes' if not real_bad else 'NO ' + ', '.join(real_bad)}  ({seconds:.0f} s)"
    )
    return 0 if ok else 1
