"""The detection record shared by detectors, models, window reports and alerting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The closed set of severities, least to most urgent (config choices, metric labels, ordering).
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
# The scikit-learn model kinds (models.py): the ``detector`` of model detections, after
# the registered detectors (metric labels, model metadata).
MODEL_KINDS: tuple[str, ...] = ("anomaly", "classifier")
# Per model kind, the evidence key that says how strong a finding is (a registered
# detector declares its own: ``DetectorSpec.peak_evidence``).
MODEL_PEAK_EVIDENCE: dict[str, str] = {"anomaly": "anomalous_flows", "classifier": "flows"}


def host_port(host: str, port: int) -> str:
    """Format an address and port as a finding's target: ``10.0.0.1:443``, ``[2001:db8::1]:443``.

    An IPv6 address is bracketed, so that the port can be told apart
    (``suppression`` reads targets back this way).
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Detection:
    """One finding: who did what to whom in which window, and the evidence for it.

    ``detector`` and ``severity`` come from the closed sets ``metrics.DETECTORS``
    and :data:`SEVERITIES`; ``source`` and ``target`` are free text (addresses,
    ``addr:port`` as :func:`host_port` writes it, a domain) and must never become
    metric labels.
    """

    detector: str
    severity: str
    source: str
    target: str
    window_start: float  # epoch seconds
    window_end: float
    evidence: dict[str, Any] = field(default_factory=dict)  # the counts that crossed thresholds
    summary: str = ""  # one human sentence

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity used to de-duplicate and to resolve alerts across windows."""
        return (self.detector, self.source, self.target)

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "severity": self.severity,
            "source": self.source,
            "target": self.target,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "evidence": dict(self.evidence),
            "summary": self.summary,
        }
