"""What runs under the current config: the components the daemon's collaborators share.

`Parts` holds the ingest service, the window aggregator, the analyzer, the summariser,
the alert pusher and the allow-lists. They are built once at start-up; a reload
(`runtime/reload.py`) reconfigures them in place or swaps in a new summariser or
allow-list, so everyone reads them from here at the moment of use.

May import (ours): `config`, `metrics`, `recording` and, lazily (they pull in numpy and
scikit-learn), `ingest.service`, `window`, `analysis`, `summarise`, `alerting`,
`suppression`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import recording

if TYPE_CHECKING:
    from ..alerting import AlertPusher
    from ..analysis import Analyzer
    from ..config import Config
    from ..ingest.service import IngestService
    from ..metrics import Metrics
    from ..summarise import Summariser
    from ..suppression import SuppressionRules
    from ..window import WindowAggregator


@dataclass
class Parts:
    """The running components; a reload changes them between two events of the loop."""

    ingest: IngestService
    aggregator: WindowAggregator
    analyzer: Analyzer
    summariser: Summariser
    pusher: AlertPusher
    suppression: SuppressionRules
    # Held while a closed window is analysed and triaged (runtime/windows.py, its own
    # thread) and while a reload swaps components in: a window sees one config, whole.
    analysis_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, cfg: Config, external_url: str) -> Parts:
        """Build every component for ``cfg``; a model that cannot be loaded raises ModelError."""
        from ..alerting import AlertPusher
        from ..analysis import Analyzer
        from ..ingest.service import IngestService
        from ..summarise import Summariser
        from ..suppression import SuppressionRules
        from ..window import WindowAggregator

        ingest = IngestService(cfg)
        aggregator = WindowAggregator(cfg.windows, cfg.output.directory / "windows")
        analyzer = Analyzer(cfg.detectors, cfg.models, cfg.state.directory)
        summariser = Summariser(cfg.llm)
        pusher = AlertPusher(cfg.alertmanager, cfg.alerting, external_url=external_url)
        suppression = SuppressionRules.from_config(cfg.ignore)
        return cls(ingest, aggregator, analyzer, summariser, pusher, suppression)

    def record_config(self, m: Metrics, cfg: Config) -> None:
        """Record the settings and the loaded models (at start-up and after each reload)."""
        recording.record_settings(m, cfg)
        recording.record_models(m, self.analyzer.model_info())
        for model in self.analyzer.models():
            recording.preinit_classes(m, model.classes)
