"""docs/architecture.md's import rules, enforced: imports run one way.

Guards docs/architecture.md: "Imports run one way: nothing imports `daemon` except `cli`;
nothing in the runtime imports `tools/`." and the module table's "may import" column
for the modules whose rule is strict.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "netmon_exporter"
DOC = ROOT / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith("netmon_exporter")}


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def test_the_rules_are_still_in_the_doc() -> None:
    text = DOC.read_text()
    assert "nothing imports `daemon`" in text and "except `cli`" in text
    assert "nothing in the runtime imports `tools/`" in text


def test_nothing_but_cli_imports_the_daemon() -> None:
    bad = [
        m
        for m, p in MODULES.items()
        if m not in ("netmon_exporter.cli", "netmon_exporter.daemon")
        and any(
            n == "netmon_exporter.daemon" or n.startswith("netmon_exporter.daemon.")
            for n in imports_of(p)
        )
    ]
    assert bad == []


def test_only_the_daemon_imports_its_runtime_collaborators() -> None:
    """Guards docs/architecture.md: "nothing but `daemon` imports `runtime/`"."""
    assert "nothing but `daemon` imports `runtime/`" in DOC.read_text()
    assert "netmon_exporter.runtime.reload" in MODULES  # the package is where the rule says
    bad = [
        m
        for m, p in MODULES.items()
        if m != "netmon_exporter.daemon"
        and not m.startswith("netmon_exporter.runtime")
        and any(n.startswith("netmon_exporter.runtime") for n in imports_of(p))
    ]
    assert bad == []


def test_the_runtime_never_imports_tools() -> None:
    bad = [
        m
        for m, p in MODULES.items()
        if not m.startswith(("netmon_exporter.tools", "netmon_exporter.cli"))
        and any(n.startswith("netmon_exporter.tools") for n in imports_of(p))
    ]
    assert bad == []


LEAVES = ("setting", "detection", "text_safety", "redaction", "health", "compiled")


def test_leaf_modules_import_nothing_of_ours() -> None:
    for leaf in LEAVES:
        assert ours(imports_of(MODULES[f"netmon_exporter.{leaf}"])) == set(), leaf


def test_config_imports_only_declarations() -> None:
    allowed = ("netmon_exporter.setting", "netmon_exporter.detection", "netmon_exporter.detectors")
    got = ours(imports_of(MODULES["netmon_exporter.config"]))
    assert all(n.startswith(allowed) for n in got), got
    catalog = ours(imports_of(MODULES["netmon_exporter.detectors.catalog"]))
    assert all(n.startswith(allowed[:2]) for n in catalog), catalog


def test_capture_imports_only_capture() -> None:
    for m, p in MODULES.items():
        if m.startswith("netmon_exporter.capture"):
            got = ours(imports_of(p))
            allowed = ("netmon_exporter.capture", "netmon_exporter.compiled")  # the kernels' njit
            assert all(n.startswith(allowed) for n in got), (m, got)


PROMETHEUS_SIDE = {
    "netmon_exporter.metrics",
    "netmon_exporter.recording",
    "netmon_exporter.process_metrics",
    "netmon_exporter.http_server",
    "netmon_exporter.daemon",
    "netmon_exporter.build_info",
}
PIPELINE_SIDE = ("capture", "flows", "pipeline", "window", "analysis", "detectors", "ingest")


def test_only_the_daemon_side_knows_prometheus() -> None:
    bad = [
        m
        for m, p in MODULES.items()
        if m not in PROMETHEUS_SIDE
        and not m.startswith("netmon_exporter.tools")
        and any(n.startswith("prometheus_client") for n in imports_of(p))
    ]
    assert bad == []


def test_the_pipeline_knows_nothing_of_metrics_http_or_the_daemon() -> None:
    # metrics' closed label sets (FILE_KINDS, PROTOCOLS...) are plain constants; its
    # registry-building side is the daemon's
    forbidden = (
        "netmon_exporter.metrics.build_metrics",
        "netmon_exporter.metrics.Metrics",
        "netmon_exporter.recording",
        "netmon_exporter.http_server",
    )
    for m, p in MODULES.items():
        if m.count(".") and m.split(".")[1] in PIPELINE_SIDE:
            got = ours(imports_of(p))
            assert not any(n.startswith(forbidden) for n in got), (m, got)


def test_the_ingest_core_is_pure() -> None:
    """Guards docs/architecture.md: "no threads, clocks or OS calls" in the scheduler core."""
    assert "no threads, clocks or OS calls" in DOC.read_text()
    impure_modules = ("threading", "time", "socket", "sqlite3", "subprocess", "shutil", "pathlib")
    for name in ("scheduler", "decisions"):
        path = MODULES[f"netmon_exporter.ingest.{name}"]
        got = imports_of(path)
        assert not {n for n in got if n.split(".")[0] in impure_modules}, (name, got)
        # os only for os.path's string functions (basename, join), never a call to the OS
        uses = {
            node.attr
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        }
        assert uses <= {"path"}, (name, uses)
