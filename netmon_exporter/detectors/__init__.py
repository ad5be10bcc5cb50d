"""Explainable detectors: one interface, one implementation module and one registry line each.

Adding a detector: write ``detectors/<name>.py`` (a class taking its settings and
implementing :class:`Detector`), then declare it in ``detectors/catalog.py`` (its
settings dataclass and a :class:`DetectorSpec`) and add the spec to ``REGISTRY``
there. The config section, the metric labels, the reference docs and the
evaluation follow from the registry.

This package's top level stays light (no numpy): ``config`` and ``metrics`` import
the registry; implementations are imported when :func:`build_detector` needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .catalog import REGISTRY, DetectorSpec

if TYPE_CHECKING:
    from ..detection import Detection
    from ..flow_schema import FlowBatch


@runtime_checkable
class Detector(Protocol):
    """One explainable detector: a batch of flows in, detections out.

    ``detect`` is called once per closed window, in time order; detectors whose
    behaviour is slower than a window keep a bounded history (``base.HorizonStore``).
    Each detection's ``evidence`` has exactly the keys its spec declares.
    """

    name: str

    def detect(
        self, flows: FlowBatch, window_start: float, window_end: float
    ) -> list[Detection]: ...


def build_detector(name: str, cfg: Any) -> Detector:
    """Build the detector ``name`` from its section of ``cfg`` (a ``DetectorsConfig``)."""
    detector: Detector = REGISTRY[name].load()(getattr(cfg, name))
    return detector


__all__ = ["REGISTRY", "Detector", "DetectorSpec", "build_detector"]
