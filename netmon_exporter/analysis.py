"""Window analysis: every detector and the loaded models over one window's flows.

The daemon owns one :class:`Analyzer`; it calls :meth:`Analyzer.analyse` per
closed window and records the returned :class:`WindowAnalysis` as metrics. On a
config reload, :meth:`Analyzer.reload` loads models first (a bad model file
fails the reload and changes nothing) and keeps the state of every detector
whose config section did not change.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import DetectorsConfig, ModelsConfig
from .detection import Detection
from .detectors import REGISTRY, Detector, build_detector
from .detectors.features import addr_codes, clear_cache
from .flow_schema import FLOWS, SLICES, FlowBatch, view
from .models import BENIGN, Model, load_model


@dataclass(frozen=True)
class WindowAnalysis:
    """What analysing one window produced (plain data for the report and the metrics)."""

    detections: list[Detection]
    class_counts: dict[str, int]
    anomaly_scores: np.ndarray
    flows_analysed: int
    seconds: float
    anomaly_threshold: float = 0.6
    detector_seconds: dict[str, float] = field(default_factory=dict)


def _reads(det: Detector) -> str:
    """Which view of a window a detector reads (``reads``: "flows", the default, or "slices")."""
    return str(getattr(det, "reads", FLOWS))


def resolve_model_path(value: str, state_dir: Path) -> Path | None:
    """Return the model path (relative ones are under the state directory), None if unset."""
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else Path(state_dir) / p


@dataclass(frozen=True)
class AnalyzerSetup:
    """Models and detectors built for a new config, not yet running (see Analyzer.prepare)."""

    detectors: Mapping[str, Detector]
    anomaly: Model | None
    classifier: Model | None
    cfg_detectors: DetectorsConfig
    cfg_models: ModelsConfig


class Analyzer:
    """Run the configured detectors and models over windows of flows, keeping detector state."""

    def __init__(
        self, cfg_detectors: DetectorsConfig, cfg_models: ModelsConfig, state_dir: Path
    ) -> None:
        self.state_dir = Path(state_dir)
        self._cfg_detectors = cfg_detectors
        self._cfg_models = cfg_models
        self.anomaly_model, self.classifier = self._load_models(cfg_models)
        self._detectors: dict[str, Detector] = {
            name: build_detector(name, cfg_detectors)
            for name in REGISTRY
            if getattr(cfg_detectors, name).enabled
        }

    @property
    def detectors(self) -> list[Detector]:
        return list(self._detectors.values())

    def models(self) -> list[Model]:
        return [m for m in (self.anomaly_model, self.classifier) if m is not None]

    def model_info(self) -> list[dict[str, str]]:
        """Return the labels of ``netmon_model_info`` for each loaded model."""
        return [m.info() for m in self.models()]

    def _load_models(self, cfg: ModelsConfig) -> tuple[Model | None, Model | None]:
        anomaly_path = resolve_model_path(cfg.anomaly_path, self.state_dir)
        classifier_path = resolve_model_path(cfg.classifier_path, self.state_dir)
        anomaly = load_model(anomaly_path) if anomaly_path else None
        classifier = load_model(classifier_path) if classifier_path else None
        from .models import ModelError

        if anomaly is not None and anomaly.kind != "anomaly":
            raise ModelError(
                f"{anomaly_path}: is a {anomaly.kind} model, models.anomaly_path "
                "needs an anomaly model"
            )
        if classifier is not None and classifier.kind != "classifier":
            raise ModelError(
                f"{classifier_path}: is a {classifier.kind} model, "
                "models.classifier_path needs a classifier"
            )
        return anomaly, classifier

    def prepare(self, cfg_detectors: DetectorsConfig, cfg_models: ModelsConfig) -> AnalyzerSetup:
        """Load models and build detectors for a new config, changing nothing that runs.

        Raise ``ModelError`` if a model cannot be loaded. Detectors whose settings did not
        change are carried over (with the state they learnt across windows).
        """
        anomaly, classifier = self._load_models(cfg_models)
        detectors: dict[str, Detector] = {}
        for name in REGISTRY:
            section = getattr(cfg_detectors, name)
            if not section.enabled:
                continue
            kept = self._detectors.get(name)
            if kept is not None and getattr(self._cfg_detectors, name) == section:
                detectors[name] = kept
            else:
                detectors[name] = build_detector(name, cfg_detectors)
        return AnalyzerSetup(detectors, anomaly, classifier, cfg_detectors, cfg_models)

    def commit(self, setup: AnalyzerSetup) -> None:
        """Swap in what :meth:`prepare` built, in one step."""
        self.anomaly_model, self.classifier = setup.anomaly, setup.classifier
        self._detectors = dict(setup.detectors)
        self._cfg_detectors, self._cfg_models = setup.cfg_detectors, setup.cfg_models

    def reload(self, cfg_detectors: DetectorsConfig, cfg_models: ModelsConfig) -> None:
        """Prepare and commit; raise ``ModelError`` (changing nothing) if a model fails to load."""
        self.commit(self.prepare(cfg_detectors, cfg_models))

    def analyse(self, records: FlowBatch, window_start: float, window_end: float) -> WindowAnalysis:
        """Run every detector and model over one window's flows.

        A window holds whole flows and per-window slices of flows that crossed window
        boundaries (``flow_schema.RECORD_*``). Detectors see the whole flows, unless
        they declare ``reads = "slices"`` (the volumetric ones): then they see each
        flow's packets within this window. Models see whole flows.
        """
        t0 = time.perf_counter()
        flows = view(records, FLOWS)
        found: dict[str, list[Detection]] = {}
        timings: dict[str, float] = {}
        # whole-flow detectors first, then the slice readers: the per-batch feature cache
        # holds one batch at a time
        order = sorted(self._detectors.items(), key=lambda kv: _reads(kv[1]) == SLICES)
        slices: FlowBatch | None = None
        for name, det in order:
            t = time.perf_counter()
            batch = flows
            if _reads(det) == SLICES:
                slices = view(records, SLICES) if slices is None else slices
                batch = slices
            found[name] = det.detect(batch, window_start, window_end)
            timings[name] = time.perf_counter() - t
        detections = [d for name in self._detectors for d in found[name]]
        cfg = self._cfg_models
        scores = np.zeros(0)
        class_counts: dict[str, int] = {}
        if self.anomaly_model is not None and len(flows):
            scores = self.anomaly_model.score(flows)
            anomalous = scores >= cfg.anomaly_threshold
            class_counts = {BENIGN: int((~anomalous).sum()), "anomalous": int(anomalous.sum())}
            detections.extend(
                self._anomaly_detections(flows, scores, anomalous, window_start, window_end)
            )
        if self.classifier is not None and len(flows):
            classes = self.classifier.classify(flows)
            if len(scores) == 0:
                scores = self.classifier.score(flows)
            names, counts = np.unique(classes.astype(str), return_counts=True)
            class_counts = {str(c): int(n) for c, n in zip(names, counts, strict=True)}
            detections.extend(self._classifier_detections(flows, classes, window_start, window_end))
        clear_cache()  # the cache would keep this window's columns alive until the next one
        return WindowAnalysis(
            detections=detections,
            class_counts=class_counts,
            anomaly_scores=scores,
            flows_analysed=len(flows),
            seconds=time.perf_counter() - t0,
            anomaly_threshold=cfg.anomaly_threshold,
            detector_seconds=timings,
        )

    def _per_source(
        self, flows: FlowBatch, mask: np.ndarray, min_flows: int, min_share: float = 0.0
    ) -> list[tuple[str, str, np.ndarray]]:
        """Return (source, top destination, rows) for sources with ``min_flows`` flows in
        ``mask``, making up at least ``min_share`` of all their flows."""
        if min_flows <= 0 or mask.sum() < min_flows:
            return []
        codes = addr_codes(flows)
        rows = np.flatnonzero(mask)
        per_src = np.bincount(codes.src[rows], minlength=len(codes.table))
        total = np.bincount(codes.src, minlength=len(codes.table))
        hit = (per_src >= min_flows) & (per_src >= min_share * total)
        out = []
        for code in np.flatnonzero(hit):
            mine = rows[codes.src[rows] == code]
            dst, n = np.unique(codes.dst[mine], return_counts=True)
            top_dst = codes.text(dst[np.argmax(n) : np.argmax(n) + 1])[0]
            out.append((codes.text(np.array([code]))[0], top_dst, mine))
        return out

    def _anomaly_detections(
        self, flows: FlowBatch, scores: np.ndarray, anomalous: np.ndarray, ws: float, we: float
    ) -> list[Detection]:
        cfg = self._cfg_models
        out = []
        for source, target, rows in self._per_source(
            flows, anomalous, cfg.anomaly_min_flows, cfg.anomaly_min_share
        ):
            ports, n = np.unique(flows["dst_port"][rows], return_counts=True)
            evidence = {
                "anomalous_flows": int(len(rows)),
                "threshold": cfg.anomaly_min_flows,
                "share_of_source_flows": round(
                    len(rows) / max(int((flows["src_ip"] == flows["src_ip"][rows[0]]).sum()), 1), 3
                ),
                "score_threshold": cfg.anomaly_threshold,
                "max_score": round(float(scores[rows].max()), 4),
                "mean_score": round(float(scores[rows].mean()), 4),
                "top_dst_ports": [int(p) for p in ports[np.argsort(-n)[:5]]],
            }
            summary = (
                f"{source} had {len(rows)} flows unlike the baseline "
                f"(score >= {cfg.anomaly_threshold:g}), mostly to {target}"
            )
            out.append(
                Detection("anomaly", cfg.severity, source, target, ws, we, evidence, summary)
            )
        return out

    def _classifier_detections(
        self, flows: FlowBatch, classes: np.ndarray, ws: float, we: float
    ) -> list[Detection]:
        cfg = self._cfg_models
        out = []
        for cls in sorted(set(classes.astype(str).tolist()) - {BENIGN}):
            mask = classes == cls
            for source, target, rows in self._per_source(flows, mask, cfg.classifier_min_flows):
                evidence = {
                    "class": cls,
                    "flows": int(len(rows)),
                    "threshold": cfg.classifier_min_flows,
                }
                summary = (
                    f"{len(rows)} flows from {source} classified as {cls!r}, mostly to {target}"
                )
                out.append(
                    Detection("classifier", cfg.severity, source, target, ws, we, evidence, summary)
                )
        return out
