"""scikit-learn models: train, save and load safely (skops, never pickle), score flows.

Two kinds: an ``anomaly`` model (IsolationForest) learned from the site's own
normal traffic, and a supervised ``classifier`` (RandomForest) learned from
labelled flow CSVs. A model is two files: ``<name>.skops`` (the estimator, loaded
by skops with an explicit allow-list of types) and ``<name>.skops.json`` (the
metadata: features, classes, versions, training-data digest, date, the skops
file's sha256). Inference is one vectorised call per batch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .detection import MODEL_KINDS
from .flow_schema import FEATURE_COLUMNS, MODEL_FEATURES, FlowBatch

FORMAT_VERSION = 1
BENIGN = "benign"

# Features the models use by default (flow_schema.MODEL_FEATURES: present both in flows
# we build from captures and in CIC-IDS2017-style flow CSVs).
DEFAULT_FEATURES: tuple[str, ...] = MODEL_FEATURES
_NUMERIC_KEYS = ("src_port", "dst_port", "protocol")
KNOWN_FEATURES = frozenset(FEATURE_COLUMNS) | frozenset(_NUMERIC_KEYS)

# The only types a model file may contain beyond skops' built-in safe set.
ALLOWED_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._iforest.IsolationForest",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.tree._classes.ExtraTreeRegressor",
        "sklearn.tree._classes.DecisionTreeClassifier",
    }
)
_ALGORITHMS = {"anomaly": "IsolationForest", "classifier": "RandomForestClassifier"}


class ModelError(Exception):
    """A model file is missing, corrupt, untrusted or does not match its metadata."""


def metadata_path(path: str | os.PathLike[str]) -> Path:
    """Return the metadata file that belongs to a model file."""
    return Path(str(path) + ".json")


def normalise_label(label: str) -> str:
    """Map labels of different datasets onto one spelling (``BENIGN`` -> ``benign``)."""
    text = " ".join(str(label).strip().split()).lower()
    text = text.replace("\ufffd", "-").replace("\u2013", "-")
    return BENIGN if text in ("benign", "normal", "") else text


def feature_matrix(flows: FlowBatch, features: Sequence[str]) -> np.ndarray:
    """Build the model input: signed log1p of each feature, missing values as -1.

    Flow features span many orders of magnitude (bytes/s next to flag counts);
    the log keeps tree splits meaningful across sites and capture lengths.
    """
    n = len(flows)
    x = np.empty((n, len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        if name in flows:
            x[:, j] = np.asarray(flows[name], dtype=np.float64)
        else:
            x[:, j] = np.nan
    x[~np.isfinite(x)] = np.nan
    x = np.sign(x) * np.log1p(np.abs(x))
    np.nan_to_num(x, copy=False, nan=-1.0)
    return x


@dataclass
class Model:
    """A loaded or freshly trained model with its metadata."""

    kind: str
    estimator: Any
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.metadata["features"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("classes", ()))

    def score(self, flows: FlowBatch) -> np.ndarray:
        """Return a 0-1 anomaly score per flow (anomaly: IsolationForest's score;
        classifier: probability of not being benign)."""
        if len(flows) == 0:
            return np.zeros(0)
        x = feature_matrix(flows, self.features)
        if self.kind == "anomaly":
            return np.clip(-self.estimator.score_samples(x), 0.0, 1.0)
        proba = self.estimator.predict_proba(x)
        classes = [str(c) for c in self.estimator.classes_]
        if BENIGN in classes:
            return np.clip(1.0 - proba[:, classes.index(BENIGN)], 0.0, 1.0)
        return proba.max(axis=1)

    def classify(self, flows: FlowBatch, threshold: float = 0.6) -> np.ndarray:
        """Return a class name per flow (anomaly models: ``benign`` / ``anomalous``)."""
        if len(flows) == 0:
            return np.zeros(0, dtype=object)
        if self.kind == "anomaly":
            return np.where(self.score(flows) >= threshold, "anomalous", BENIGN).astype(object)
        return self.estimator.predict(feature_matrix(flows, self.features)).astype(object)

    def info(self) -> dict[str, str]:
        """Return the labels of the ``netmon_model_info`` metric."""
        md = self.metadata
        return {
            "kind": self.kind,
            "algorithm": str(md.get("algorithm", "")),
            "version": f"sklearn-{md.get('versions', {}).get('scikit-learn', '?')}",
            "trained_at": str(md.get("trained_at", "")),
            "digest": str(md.get("training_data_digest", ""))[:16],
        }


def _versions() -> dict[str, str]:
    import sklearn
    import skops

    from . import __version__

    return {
        "netmon-exporter": __version__,
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "numpy": np.__version__,
    }


def _metadata(
    kind: str, features: Sequence[str], n_samples: int, digest: str, **extra: Any
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "algorithm": _ALGORITHMS[kind],
        "features": list(features),
        "n_samples": int(n_samples),
        "training_data_digest": digest,
        "trained_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": _versions(),
        **extra,
    }


def train_anomaly(
    flows: FlowBatch,
    *,
    data_digest: str,
    features: Sequence[str] = DEFAULT_FEATURES,
    n_estimators: int = 100,
    max_samples: int = 4096,
    seed: int = 0,
    contamination_quantile: float = 0.995,
) -> Model:
    """Fit an IsolationForest on normal traffic; the metadata records the score quantile seen."""
    from sklearn.ensemble import IsolationForest

    if len(flows) < 10:
        raise ValueError(f"need at least 10 flows of baseline traffic, got {len(flows)}")
    x = feature_matrix(flows, features)
    est = IsolationForest(
        n_estimators=n_estimators,
        max_samples=min(max_samples, len(flows)),
        random_state=seed,
        n_jobs=1,
    ).fit(x)
    scores = -est.score_samples(x)
    md = _metadata(
        "anomaly",
        features,
        len(flows),
        data_digest,
        baseline_score_quantiles={
            "p50": round(float(np.quantile(scores, 0.5)), 4),
            f"p{contamination_quantile * 100:g}": round(
                float(np.quantile(scores, contamination_quantile)), 4
            ),
            "max": round(float(scores.max()), 4),
        },
        classes=[BENIGN, "anomalous"],
    )
    return Model("anomaly", est, md)


def train_classifier(
    flows: FlowBatch,
    labels: np.ndarray,
    *,
    data_digest: str,
    features: Sequence[str] = DEFAULT_FEATURES,
    test_size: float = 0.25,
    n_estimators: int = 100,
    seed: int = 0,
) -> tuple[Model, dict[str, Any]]:
    """Fit a RandomForest on labelled flows; return it and its held-out per-class report."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import classification_report
    from sklearn.model_selection import train_test_split

    y = np.array([normalise_label(v) for v in labels], dtype=object)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {list(classes)}")
    x = feature_matrix(flows, features)
    stratify = y if counts.min() >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=stratify
    )
    est = RandomForestClassifier(
        n_estimators=n_estimators,
        min_samples_leaf=2,
        n_jobs=1,
        random_state=seed,
        class_weight="balanced_subsample",
    )
    est.fit(x_tr, y_tr.astype(str))
    pred = est.predict(x_te)
    report = classification_report(y_te.astype(str), pred, output_dict=True, zero_division=0)
    md = _metadata(
        "classifier",
        features,
        len(flows),
        data_digest,
        classes=[str(c) for c in est.classes_],
        class_counts={str(c): int(n) for c, n in zip(classes, counts, strict=True)},
        held_out={
            "test_size": test_size,
            "samples": int(len(y_te)),
            "accuracy": round(float(report["accuracy"]), 4),
        },
    )
    return Model("classifier", est, md), report


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model: Model, path: str | os.PathLike[str]) -> Path:
    """Write ``path`` (skops) and its metadata atomically; return the model path."""
    import skops.io as sio

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".skops")
    os.close(fd)
    try:
        sio.dump(model.estimator, tmp)
        md = dict(model.metadata, model_sha256=file_sha256(tmp), model_file=p.name)
        md_tmp = tmp + ".json"
        Path(md_tmp).write_text(json.dumps(md, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        os.replace(md_tmp, metadata_path(p))
    finally:
        for leftover in (tmp, tmp + ".json"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    model.metadata = md
    return p


def _check_metadata(md: Any, where: Path) -> None:
    if not isinstance(md, dict):
        raise ModelError(f"{where}: metadata is not a JSON object")
    missing = [k for k in ("format_version", "kind", "features", "model_sha256") if k not in md]
    if missing:
        raise ModelError(
            f"{where}: metadata lacks {', '.join(missing)}; retrain the model "
            "with 'netmon-exporter train'"
        )
    if md["format_version"] != FORMAT_VERSION:
        raise ModelError(
            f"{where}: metadata format {md['format_version']!r} is not supported "
            f"(expected {FORMAT_VERSION}); retrain the model"
        )
    if md["kind"] not in MODEL_KINDS:
        raise ModelError(f"{where}: kind {md['kind']!r} is not one of {', '.join(MODEL_KINDS)}")
    feats = md["features"]
    if not isinstance(feats, list) or not feats or not all(isinstance(f, str) for f in feats):
        raise ModelError(f"{where}: features must be a non-empty list of column names")
    unknown = [f for f in feats if f not in KNOWN_FEATURES]
    if unknown:
        raise ModelError(f"{where}: unknown feature columns {unknown[:5]}")


def load_model(path: str | os.PathLike[str]) -> Model:
    """Load a model safely; raise :class:`ModelError` saying what is wrong and what to do."""
    import skops.io as sio

    p = Path(path)
    md_path = metadata_path(p)
    if not p.is_file():
        raise ModelError(
            f"{p}: model file does not exist (train one with 'netmon-exporter "
            "train' or fix models.*_path)"
        )
    try:
        md = json.loads(md_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"{md_path}: metadata file is missing; a model is only loaded with "
            "the metadata written by 'netmon-exporter train'"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{md_path}: cannot read metadata: {exc}") from None
    _check_metadata(md, md_path)
    try:
        digest = file_sha256(p)
    except OSError as exc:
        raise ModelError(f"{p}: cannot read: {exc}") from None
    if digest != md["model_sha256"]:
        raise ModelError(
            f"{p}: sha256 {digest[:12]}... does not match its metadata "
            f"({str(md['model_sha256'])[:12]}...); the file was changed or "
            "replaced, retrain or restore it"
        )
    try:
        untrusted = sio.get_untrusted_types(file=p)
    except Exception as exc:  # skops raises many kinds on a corrupt archive
        raise ModelError(f"{p}: not a readable skops file: {exc}") from None
    refused = sorted(set(untrusted) - ALLOWED_TYPES)
    if refused:
        raise ModelError(
            f"{p}: contains types outside the allow-list: {', '.join(refused[:5])}; "
            "refusing to load it"
        )
    try:
        est = sio.load(p, trusted=list(untrusted))
    except Exception as exc:
        raise ModelError(f"{p}: cannot load: {exc}") from None
    expected = _ALGORITHMS[md["kind"]]
    if type(est).__name__ != expected:
        raise ModelError(
            f"{p}: holds a {type(est).__name__}, expected {expected} for a {md['kind']} model"
        )
    if getattr(est, "n_features_in_", len(md["features"])) != len(md["features"]):
        raise ModelError(
            f"{p}: the estimator expects {est.n_features_in_} features, the "
            f"metadata lists {len(md['features'])}"
        )
    return Model(md["kind"], est, md)
