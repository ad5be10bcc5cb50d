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


def render_metrics_markdown() -> str:
    from prometheus_client import CollectorRegistry

    from ..metrics import DETECTORS, build_metrics

    registry = CollectorRegistry()
    build_metrics(registry)
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        if family.type == "info":
            name = family.name + "_info"
        labels: set[str] = set()
        for sample in family.samples:
            labels.update(k for k in sample.labels if k not in ("le",))
        if family.type == "info":
            labels = {"version", "python_version", "numpy_version"}
        shown = ", ".join(f"`{x}`" for x in sorted(labels))
        rows.append(f"| `{name}` | {family.type} | {shown} | {family.documentation} |")
    return (
        "# Metric reference\n\nGenerated from `netmon_exporter/metrics.py` by "
        "`python -m netmon_exporter.tools.reference_docs`; do not edit by hand. Label values come "
        "from closed sets defined there and are pre-initialised to 0. Besides these, the "
        "standard `process_*` (uptime: `process_start_time_seconds`), `python_info` and "
        "`python_gc_*` metrics are exported.\n\n" + "\n".join(rows) + "\n\n"
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
