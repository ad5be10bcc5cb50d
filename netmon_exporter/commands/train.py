"""``netmon-exporter train``: learn the anomaly model or the classifier from files.

``--baseline PATH...`` learns an IsolationForest from the site's own normal
traffic (captures or flow CSVs, files or directories). ``--labelled CSV...``
learns a RandomForest from labelled flow CSVs (CICFlowMeter / CIC-IDS2017
columns with a ``Label`` column) and prints per-class precision, recall and F1
on a held-out split. Either way the model is saved with skops plus a metadata
file (features, classes, versions, training-data digest, date).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..flow_schema import FlowBatch
from ..models import file_sha256, save_model, train_anomaly, train_classifier
from ..pipeline import CaptureFormatError, FlowSettings, process_file

SUFFIXES = (".pcap", ".pcapng", ".pcap.gz", ".csv")


class TrainError(Exception):
    """The training input is unusable (message says which file and what to do)."""


def expand(paths: list[Path], csv_only: bool = False) -> list[Path]:
    """Return the input files: files as given, directories searched recursively."""
    suffixes = (".csv",) if csv_only else SUFFIXES
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes)))
        elif p.is_file():
            out.append(p)
        else:
            raise TrainError(f"{p}: no such file or directory")
    if not out:
        raise TrainError(
            f"no input files ({', '.join(suffixes)}) under {', '.join(str(p) for p in paths)}"
        )
    return out


def data_digest(files: list[Path]) -> str:
    """Digest of the training inputs: names and contents, order-independent."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        h.update(f.name.encode() + b"\0" + file_sha256(f).encode() + b"\n")
    return "sha256:" + h.hexdigest()


def load_flows(files: list[Path]) -> FlowBatch:
    batches = []
    for f in files:
        try:
            batches.append(process_file(f, FlowSettings()).flows)
        except CaptureFormatError as exc:
            raise TrainError(f"{f}: {exc}") from None
    return FlowBatch.concat(batches)


def _sample(
    flows: FlowBatch, labels: np.ndarray | None, limit: int, seed: int
) -> tuple[FlowBatch, np.ndarray | None]:
    if len(flows) <= limit:
        return flows, labels
    idx = np.sort(np.random.default_rng(seed).choice(len(flows), limit, replace=False))
    return flows.take(idx), None if labels is None else labels[idx]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="Train the anomaly model or the classifier.",
        description=__doc__.split("\n\n")[1],
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--baseline",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="Captures or flow CSVs of normal traffic (files or directories).",
    )
    g.add_argument(
        "--labelled",
        nargs="+",
        type=Path,
        metavar="CSV",
        help="Labelled flow CSVs (a Label column, e.g. CIC-IDS2017).",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="Model file (default: state/models/anomaly.skops or state/models/classifier.skops).",
    )
    p.add_argument(
        "--trees",
        type=int,
        default=None,
        help="Number of trees (default 100 for both the anomaly model and the classifier).",
    )
    p.add_argument(
        "--test-size",
        type=float,
        default=0.25,
        help="Held-out share for the classifier report (default 0.25).",
    )
    p.add_argument(
        "--max-flows",
        type=int,
        default=2_000_000,
        help="Train on a random sample of at most this many flows.",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except TrainError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    labelled = args.labelled is not None
    kind = "classifier" if labelled else "anomaly"
    files = expand(args.labelled if labelled else args.baseline, csv_only=labelled)
    output = args.output or Path("state") / "models" / f"{kind}.skops"
    digest = data_digest(files)
    flows = load_flows(files)
    print(f"read {len(files)} file(s): {len(flows):,} flows ({digest[:19]}...)")
    if labelled:
        labels = flows["label"] if "label" in flows else np.full(len(flows), "", dtype=object)
        has = np.array([bool(str(v).strip()) for v in labels], dtype=bool)
        if not has.any():
            raise TrainError("no labelled rows: the CSVs need a 'Label' column with values")
        flows, labels = flows.take(has), labels[has]
        flows, sampled = _sample(flows, labels, args.max_flows, args.seed)
        assert sampled is not None
        try:
            model, report = train_classifier(
                flows,
                sampled,
                data_digest=digest,
                test_size=args.test_size,
                n_estimators=args.trees or 100,
                seed=args.seed,
            )
        except ValueError as exc:
            raise TrainError(str(exc)) from None
        print(f"held-out split ({args.test_size:.0%}), per class:")
        print(f"  {'class':<28}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}")
        for name, row in report.items():
            if isinstance(row, dict):
                print(
                    f"  {name:<28}{row['precision']:>10.3f}{row['recall']:>8.3f}"
                    f"{row['f1-score']:>8.3f}{int(row['support']):>9}"
                )
        print(f"  accuracy {report['accuracy']:.4f}")
    else:
        flows, _ = _sample(flows, None, args.max_flows, args.seed)
        try:
            model = train_anomaly(
                flows, data_digest=digest, n_estimators=args.trees or 100, seed=args.seed
            )
        except ValueError as exc:
            raise TrainError(str(exc)) from None
        q = model.metadata["baseline_score_quantiles"]
        print("baseline anomaly scores: " + ", ".join(f"{k} {v}" for k, v in q.items()))
        high = [v for k, v in q.items() if k not in ("p50", "max")][0]
        print(
            f"hint: models.anomaly_threshold at or above {high} flags at most "
            f"{100 - float(next(k for k in q if k not in ('p50', 'max'))[1:]):.1f}% of "
            "flows like the baseline"
        )
    path = save_model(model, output)
    print(f"saved {kind} model: {path} (+ {path.name}.json)")
    print(f"use it with models.{'classifier' if labelled else 'anomaly'}_path: {path.resolve()}")
    return 0
