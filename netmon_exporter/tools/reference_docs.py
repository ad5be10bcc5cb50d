"""Render config.yaml and the configuration and metric references from the code.

Run ``python -m netmon_exporter.tools.reference_docs`` (``make docs``) to regenerate
``config.yaml``, ``docs/configuration.md``, ``docs/metrics.md`` and
``docs/detector-reference.md``; a test checks they are up to date, so the shipped
files document every key, every metric and every detector's evidence.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from ..config import Config, field_default, is_section
from ..detection import SEVERITIES
from ..detectors import REGISTRY

_HEADER = """\
# netmon-exporter configuration.
#
# Every key is optional; the value shown is the default. Relative paths are
# relative to this file. Validate with (from this file's directory; the capture
# directory must exist, as `make run` makes it; in a checkout, the command is
# .venv/bin/netmon-exporter once `make venv` or `make run` has installed it):
#   mkdir -p captures && netmon-exporter --config.file=config.yaml --config.check
# Apply changes without a restart: kill -HUP <pid>, or curl -X POST http://HOST:9864/-/reload
# (keys marked "restart" are only read at start-up). Listen address, telemetry path,
# web config (TLS, basic auth) and logging are command-line flags (see --help).
"""


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Path):
        s = str(v)
        return s if s.startswith(("/", ".")) else "./" + s
    if isinstance(v, tuple):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'" if v else '""'
    return str(v)


def _range(meta: dict[str, Any]) -> str:
    parts = []
    if meta.get("choices"):
        parts.append(" | ".join(meta["choices"]))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None or hi is not None:
        fmt = _yaml_value
        parts.append(f"{fmt(lo) if lo is not None else ''}–{fmt(hi) if hi is not None else ''}")
    if meta.get("restart"):
        parts.append("restart")
    return f" [{', '.join(parts)}]" if parts else ""


def render_yaml(cls: type = Config, indent: int = 0) -> str:
    out = [_HEADER] if indent == 0 else []
    hints = typing.get_type_hints(cls)
    pad = "  " * indent
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        meta = dict(f.metadata)
        if is_section(tp):
            if indent == 0:
                out.append("")
            out.append(f"{pad}{f.name}:  # {meta['help']}")
            out.append(render_yaml(tp, indent + 1))
            continue
        default = field_default(f)
        out.append(f"{pad}# {meta['help']}{_range(meta)}")
        out.append(f"{pad}{f.name}: {_yaml_value(default)}")
    return "\n".join(out)


def render_markdown() -> str:
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]

    def walk(cls: type, path: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            sub = f"{path}.{f.name}" if path else f.name
            meta = dict(f.metadata)
            if is_section(tp):
                walk(tp, sub)
                continue
            default = field_default(f)
            allowed = _range(meta).strip(" []")
            rows.append(
                f"| `{sub}` | `{_yaml_value(default)}` | {allowed} | "
                f"{meta['help'].replace('|', '/')} |"
            )

    walk(Config, "")
    return (
        "# Configuration reference\n\nGenerated from `netmon_exporter/config.py` (the "
        "`detectors.*` sections from `netmon_exporter/detectors/catalog.py`) by "
        "`python -m netmon_exporter.tools.reference_docs`; do not edit by hand.\n\n"
        "Ranges are inclusive. `restart`: only read at start-up (a reload logs and reports "
        "that a restart is needed).\n\n" + "\n".join(rows) + "\n"
    )


def metric_catalogue() -> list[MetricDoc]:
    """Every metric family the daemon exports besides the standard ones, as documented.

    The families of ``metrics.build_metrics`` and of the worker-process collector, in
    registration order, with their declared label names (also for families that have
    no series yet).
    """
    import tempfile

    from prometheus_client import CollectorRegistry

    from ..metrics import NAMESPACE, build_metrics
    from ..process_metrics import WorkerProcessCollector

    registry = CollectorRegistry()
    m = build_metrics(registry)
    declared: dict[str, tuple[str, ...]] = {}
    for f in dataclasses.fields(m):
        value = getattr(m, f.name)
        for wrapper in value.values() if isinstance(value, dict) else [value]:
            name = getattr(wrapper, "_name", None)
            if name is not None:  # prometheus-client keeps the declared label names here
                declared[name] = tuple(getattr(wrapper, "_labelnames", ()))
    out = []
    with tempfile.TemporaryDirectory() as no_processes:
        WorkerProcessCollector(registry, proc=no_processes)
        for family in registry.collect():
            labels: tuple[str, ...] = declared.get(family.name) or tuple(
                getattr(family, "_labelnames", ())  # the worker collector's families
            )
            if family.type == "info":
                labels = tuple(k for s in family.samples for k in s.labels)
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            short = family.name.removeprefix(f"{NAMESPACE}_")
            out.append(
                MetricDoc(
                    family.name + suffix, short, family.type, tuple(labels), family.documentation
                )
            )
    return out


@dataclasses.dataclass(frozen=True)
class MetricDoc:
    """One row of docs/metrics.md."""

    name: str  # as exposed (counters with _total)
    short: str  # without the netmon_ prefix and the _total suffix (as in metrics.py)
    type: str
    labels: tuple[str, ...]
    help: str

    def after_restart(self) -> str:
        from ..metrics import AFTER_RESTART, RESTORED_COUNTERS

        if self.short in AFTER_RESTART:
            return AFTER_RESTART[self.short]
        if self.type == "counter":
            return "restored" if self.short in RESTORED_COUNTERS else "from 0"
        return "from 0" if self.type == "histogram" else "current"


def render_metrics_markdown() -> str:
    from ..metrics import DETECTORS, OPEN_LABELS

    rows = ["| metric | type | labels | after a restart | meaning |", "|---|---|---|---|---|"]
    notes = []
    for doc in metric_catalogue():
        shown = ", ".join(f"`{x}`" for x in sorted(doc.labels))
        if doc.short in OPEN_LABELS:
            shown += " (see below)"
            notes.append(f"- `{doc.name}`: {OPEN_LABELS[doc.short]}")
        help_text = doc.help.replace("|", "/")
        rows.append(
            f"| `{doc.name}` | {doc.type} | {shown} | {doc.after_restart()} | {help_text} |"
        )
    return (
        "# Metric reference\n\nGenerated from `netmon_exporter/metrics.py` by "
        "`python -m netmon_exporter.tools.reference_docs`; do not edit by hand. Besides these, "
        "the standard `process_*` (uptime: `process_start_time_seconds`), `python_info` and "
        "`python_gc_*` metrics are exported. A test checks this table against a real scrape "
        "of the daemon: the same families, the same labels.\n\n"
        "**Labels.** Label values come from closed sets defined in `metrics.py`, and every "
        "series of those sets exists from start-up with the value 0 (so `rate()`, `increase()` "
        "and alert rules see a 0 before the first event), except for the metrics marked "
        "*see below*, listed after the table with what bounds their series.\n\n"
        "**After a restart** (clean or not): *restored* counters start from what the ledger "
        "committed, so they continue where they were, with nothing lost or counted twice; "
        "*from 0* counters and histograms start again from 0, which `rate()` and `increase()` "
        "treat as a counter reset; *current* gauges describe the present state and are set "
        "again at start-up.\n\n" + "\n".join(rows) + "\n\n"
        "## Labels beyond pre-initialised closed sets\n\n" + "\n".join(notes) + "\n\n"
        f"Values of `detector`: {', '.join(f'`{d}`' for d in DETECTORS)} (the detector "
        "registry, then the models). Values of `severity`: "
        f"{', '.join(f'`{s}`' for s in SEVERITIES)}.\n"
    )


def render_detectors_markdown() -> str:
    """Render each registered detector: what it finds, its settings and its evidence."""
    out = [
        "# Detector reference\n\nGenerated from `netmon_exporter/detectors/catalog.py` by "
        "`python -m netmon_exporter.tools.reference_docs`; do not edit by hand. How the "
        "detectors work and where they fall short: [detectors.md](detectors.md); every "
        "setting: [configuration.md](configuration.md).\n\nEach detection carries the "
        "detector, severity, source, target and window, a one-line summary and the "
        "**evidence** below (the keys of `evidence` in window reports and alert annotations)."
    ]
    for spec in REGISTRY.values():
        defaults = spec.settings()
        module = spec.implementation.partition(":")[0].replace(".", "/") + ".py"
        rows = "\n".join(
            f"| `{key}` | {meaning.replace('|', '/')} |" for key, meaning in spec.evidence.items()
        )
        out.append(
            f"## `{spec.name}`: {spec.help}\n\n{field_help(spec.settings, 'enabled')} "
            f"Settings: `detectors.{spec.name}.*` (default severity `{defaults.severity}`); "
            f"implementation: `{module}`.\n\n| evidence | meaning |\n|---|---|\n{rows}"
        )
    return "\n\n".join(out) + "\n"


def field_help(cls: type, name: str) -> str:
    """Return the help text of setting ``name`` of section ``cls``."""
    return str(next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name))


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    (root / "config.yaml").write_text(render_yaml() + "\n", encoding="utf-8")
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "configuration.md").write_text(render_markdown(), encoding="utf-8")
    (root / "docs" / "metrics.md").write_text(render_metrics_markdown(), encoding="utf-8")
    (root / "docs" / "detector-reference.md").write_text(
        render_detectors_markdown(), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
