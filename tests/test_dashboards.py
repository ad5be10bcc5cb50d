"""Grafana dashboards: reproducible generation, SDK schema validity, units, queries, provisioning.

The pinned grafana-foundation-sdk wheel ships typed models but no JSON-schema files, so
the schema is derived from those models: every model class becomes a JSON-schema object
whose properties are the JSON keys its ``to_json`` writes (``additionalProperties: false``),
typed from its annotations (enums, literals, nested models), with per-panel-type
``options``/``fieldConfig.defaults.custom`` and Prometheus targets.
"""

from __future__ import annotations

import copy
import enum
import importlib
import importlib.util
import inspect
import json
import pkgutil
import re
import subprocess
import sys
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from grafana_foundation_sdk import models as sdk_models
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm
from prometheus_client import CollectorRegistry

from netmon_exporter.metrics import build_metrics

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASH_DIR = GRAFANA / "dashboards"
EXPECTED = {
    "netmon-overview",
    "netmon-traffic",
    "netmon-detections",
    "netmon-performance",
    "netmon-errors",
}
PROMQL_FUNCTIONS_AND_KEYWORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "topk",
    "bottomk",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "rate",
    "irate",
    "increase",
    "time",
    "histogram_quantile",
    "le",
    "offset",
    "bool",
}
NON_EXPORTER_METRICS = {"up", "process_start_time_seconds"}


def load_generator() -> types.ModuleType:
    """Import grafana/dashboards.py (not a package) by path."""
    spec = importlib.util.spec_from_file_location(
        "netmon_grafana_dashboards", GRAFANA / "dashboards.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, dict[str, Any]]:
    return {
        p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASH_DIR.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return out


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def all_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every target of every panel."""
    return [
        (name, p["title"], t["expr"])
        for name, d in committed().items()
        for p in data_panels(d)
        for t in p.get("targets", [])
    ]


SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


def catalogue() -> dict[str, set[str]]:
    """Metric family -> the series names it exposes (labelled families may have no samples)."""
    registry = CollectorRegistry()
    build_metrics(registry)
    return {
        fam.name: {fam.name + suffix for suffix in SERIES_SUFFIXES[fam.type]}
        for fam in registry.collect()
    }


def exposed_metric_names() -> set[str]:
    return set().union(*catalogue().values())


def metric_names_in(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that are metric names (not labels or functions)."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)  # range selectors
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", stripped)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", stripped))
    return {w for w in words if w not in PROMQL_FUNCTIONS_AND_KEYWORDS}


# --------------------------------------------------------------------------- SDK schema

_ASSIGN = re.compile(r'payload\["(?P<key>[^"]+)"\]\s*=\s*self\.(?P<attr>\w+)')
_INITIAL = re.compile(r'"(?P<key>[^"]+)":\s*self\.(?P<attr>\w+),')


def _json_keys(cls: type) -> tuple[dict[str, str], set[str]]:
    """Map JSON key -> attribute from ``to_json``; keys in the initial literal are required."""
    src = inspect.getsource(cls.to_json)  # type: ignore[attr-defined]
    head = src.split("}", 1)[0] if "payload: dict[str, object] = {" in src else ""
    required = {m["key"] for m in _INITIAL.finditer(head)}
    keys = {m["key"]: m["attr"] for m in _INITIAL.finditer(head)}
    keys.update({m["key"]: m["attr"] for m in _ASSIGN.finditer(src)})
    return keys, required


class _SchemaBuilder:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def ref(self, cls: type) -> dict[str, Any]:
        if cls is cogvariants.Dataquery:
            cls = pm.Dataquery  # every target in our dashboards is a Prometheus query
        name = f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__qualname__}"
        if name not in self.defs:
            self.defs[name] = {}  # placeholder breaks recursion
            self.defs[name] = self.model(cls)
        return {"$ref": f"#/$defs/{name}"}

    def model(self, cls: type) -> dict[str, Any]:
        keys, required = _json_keys(cls)
        hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
        props = {key: self.type(hints[attr]) for key, attr in keys.items() if attr in hints}
        assert props, f"no JSON keys found for {cls}"
        for key in required:  # always written, so an Optional one may be null
            if type(None) in typing.get_args(hints[keys[key]]):
                props[key] = {"anyOf": [props[key], {"type": "null"}]}
        return {
            "type": "object",
            "properties": props,
            "required": sorted(required),
            "additionalProperties": False,
        }

    def type(self, tp: Any) -> dict[str, Any]:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Union or origin is types.UnionType:
            options = [self.type(a) for a in args if a is not type(None)]
            return options[0] if len(options) == 1 else {"anyOf": options}
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin is list:
            return {"type": "array", "items": self.type(args[0]) if args else {}}
        if origin is dict:
            return {"type": "object", "additionalProperties": self.type(args[1]) if args else {}}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [m.value for m in tp]}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if tp is cogvariants.Dataquery or (
            isinstance(tp, type) and callable(getattr(tp, "to_json", None))
        ):
            return self.ref(tp)
        return {}  # object / Any: free-form in the SDK too


@cache
def sdk_dashboard_schema() -> dict[str, Any]:
    b = _SchemaBuilder()
    root = b.ref(dm.Dashboard)
    panel_rules = []
    for info in pkgutil.iter_modules(sdk_models.__path__):
        module = importlib.import_module(f"{sdk_models.__name__}.{info.name}")
        variant = getattr(module, "variant_config", None)
        if variant is None or not hasattr(module, "Options"):
            continue
        cfg = variant()
        if not hasattr(cfg, "options_from_json_hook"):
            continue
        then: dict[str, Any] = {"properties": {"options": b.ref(module.Options)}}
        if hasattr(module, "FieldConfig"):
            then["properties"]["fieldConfig"] = {
                "properties": {"defaults": {"properties": {"custom": b.ref(module.FieldConfig)}}}
            }
        panel_rules.append(
            {"if": {"properties": {"type": {"const": cfg.identifier}}}, "then": then}
        )
    panel_name = "dashboard.Panel"
    b.defs[panel_name] = {"allOf": [b.defs[panel_name], *panel_rules]}
    # Dashboard.panels is Panel | RowPanel: discriminate on the type.
    b.defs["dashboard.Dashboard"]["properties"]["panels"] = {
        "type": "array",
        "items": {
            "if": {"properties": {"type": {"const": "row"}}},
            "then": {"$ref": "#/$defs/dashboard.RowPanel"},
            "else": {"$ref": f"#/$defs/{panel_name}"},
        },
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": b.defs}


def validate(dashboard: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(sdk_dashboard_schema()).validate(dashboard)


# --------------------------------------------------------------------------- tests


def test_generation_reproduces_committed_json_byte_for_byte() -> None:
    gen = load_generator()
    assert set(gen.DASHBOARDS) == EXPECTED
    on_disk = {p.stem for p in DASH_DIR.glob("*.json")}
    assert on_disk == EXPECTED, "stray or missing files in grafana/dashboards/"
    for name in gen.DASHBOARDS:
        text = (DASH_DIR / f"{name}.json").read_text(encoding="utf-8")
        assert gen.render(name) == text, f"{name}.json is stale: run python grafana/dashboards.py"


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    script = GRAFANA / "dashboards.py"
    ok = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    clean = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    target = tmp_path / "netmon-traffic.json"
    target.write_text(target.read_text().replace("Top talkers", "Top chatters", 1))
    stale = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stale.returncode == 1
    assert "netmon-traffic.json" in stale.stdout


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_validates_against_sdk_schema(name: str) -> None:
    validate(committed()[name])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_round_trips_through_sdk_models(name: str) -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    data = committed()[name]
    again = json.loads(json.dumps(dm.Dashboard.from_json(data), cls=JSONEncoder))
    assert again == data


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["panels"][1].update(unknownKey=1),
        lambda d: d["panels"][1]["gridPos"].update(w="wide"),
        lambda d: d["panels"][1]["targets"][0].update(format="csv"),
        lambda d: d["panels"][1]["options"].update(graphMode="sparkline"),
        lambda d: d["templating"]["list"][1].update(refresh=9),
        lambda d: d.pop("schemaVersion"),
    ],
    ids=[
        "unknown-key",
        "gridpos-type",
        "target-format",
        "stat-option-enum",
        "variable-refresh",
        "missing-required",
    ],
)
def test_sdk_schema_rejects_invalid_dashboards(mutate: Any) -> None:
    broken = copy.deepcopy(committed()["netmon-overview"])
    assert broken["panels"][1]["type"] == "stat"
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_conventions(name: str) -> None:
    d = committed()[name]
    assert d["uid"] == name
    assert "netmon" in d["tags"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    assert variables["instance"]["includeAll"] and variables["instance"]["multi"]
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in data_panels(d):
        where = f"{name} / {p['title']}"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert p["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert p.get("description"), f"{where}: no description"
        assert p["targets"], f"{where}: no query"
        for t in p["targets"]:
            expr = t["expr"]
            assert 'instance=~"$instance"' in expr, f"{where}: not filtered by $instance"
            for fn, window in re.findall(r"\b(rate|irate|increase)\(\s*[^\[]*\[([^\]]+)\]", expr):
                allowed = {"$__rate_interval"} | ({"$__range"} if fn == "increase" else set())
                assert window in allowed, f"{where}: {fn}(...[{window}])"
            assert not re.search(r"\[\d+[smhd]\]", expr), f"{where}: hard-coded range"


def test_layout_fits_the_grid() -> None:
    for name, d in committed().items():
        for p in panels(d):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{name} / {p['title']}"
            assert g["h"] >= 1


def test_every_query_uses_only_exported_metrics() -> None:
    exposed = exposed_metric_names() | NON_EXPORTER_METRICS
    queries = all_queries()
    assert len(queries) > 50
    for dash, title, expr in queries:
        names = metric_names_in(expr)
        assert names, f"{dash} / {title}: no metric in {expr}"
        unknown = names - exposed
        assert not unknown, f"{dash} / {title}: unknown metric(s) {unknown} in {expr}"


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (le, kind) (rate(netmon_file_processing_seconds_bucket"
        '{instance=~"$instance", kind="pcap"}[$__rate_interval]))) / on (job) up'
    )
    assert metric_names_in(expr) == {"netmon_file_processing_seconds_bucket", "up"}


def test_catalogue_is_covered() -> None:
    """Each metric family of the catalogue appears on some dashboard."""
    used = set().union(*(metric_names_in(e) for _, _, e in all_queries()))
    missing = sorted(fam for fam, series in catalogue().items() if not series & used)
    assert missing == []


def test_provisioning_points_at_the_dashboards() -> None:
    prov = GRAFANA / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert source["isDefault"] is True
    dash = yaml.safe_load((prov / "dashboards" / "netmon.yml").read_text())
    (provider,) = dash["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/netmon"
    for d in committed().values():
        current = {v["name"]: v for v in d["templating"]["list"]}["datasource"]["current"]
        assert current["value"] == source["uid"]
