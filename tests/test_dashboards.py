"""Grafana dashboards: reproducible generation, SDK schema validity, units, queries, provisioning.

The pinned grafana-foundation-sdk wheel ships typed models but no JSON-schema files, so
the schema is derived from those models: every model class becomes a JSON-schema object
whose properties are the JSON keys its ``to_json`` writes (``additionalProperties: false``),
typed from its annotations (enums, literals, nested models), with per-panel-type
``options``/``fieldConfig.defaults.custom`` and Prometheus targets.

Two things the dashboards use have no SDK model, and get an explicit, closed schema here
instead: the Infinity data source's query (the security-findings table reads
Alertmanager's API through it), and the keys of a Prometheus annotation query that Grafana
reads but the SDK's ``AnnotationQuery`` lacks (``titleFormat``, ``textFormat``,
``tagKeys``, ``useValueForTime``). Grafana's ``alertlist`` panel has no options model
either; its options are checked against the panel's documented option names.
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
import urllib.parse
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
    "changes",
}
#: Series that are not in build_metrics' catalogue: Prometheus's own, and the daemon's
#: process collector (prometheus_client's ProcessCollector).
NON_EXPORTER_METRICS = {
    "up",
    "ALERTS",
    "process_start_time_seconds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
}
#: The worker processes' series, from the daemon's worker process collector (its help
#: texts live in netmon_exporter/metrics.py: WORKER_PROCESS_HELP).
WORKER_METRICS = {
    "netmon_worker_cpu_seconds_total",
    "netmon_worker_resident_memory_bytes",
    "netmon_worker_open_fds",
}
SELECTOR = 'job=~"$job", site=~"$site", instance=~"$instance"'
INFINITY = "yesoreyeram-infinity-datasource"


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
    """(dashboard, panel title, expr) for every Prometheus query: targets and annotations."""
    targets = [
        (name, p["title"], t["expr"])
        for name, d in committed().items()
        for p in data_panels(d)
        for t in p.get("targets", [])
        if t["datasource"]["type"] == "prometheus"
    ]
    annotations = [
        (name, f"annotation {a['name']}", a["expr"])
        for name, d in committed().items()
        for a in d["annotations"]["list"]
    ]
    return targets + annotations


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


#: The subset of the Infinity plugin's query model the dashboards use (closed: a typo or
#: an unknown key is an error).
INFINITY_QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["refId", "datasource", "type", "source", "url", "format", "columns"],
    "properties": {
        "refId": {"type": "string"},
        "datasource": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"type": {"const": INFINITY}, "uid": {"type": "string"}},
        },
        "type": {"enum": ["json"]},
        "source": {"enum": ["url"]},
        "parser": {"enum": ["simple", "backend", "jq-backend", "uql", "groq"]},
        "format": {"enum": ["table", "dataframe", "timeseries"]},
        "url": {"type": "string", "pattern": "^/api/v2/"},
        "url_options": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"method": {"enum": ["GET"]}, "data": {"type": "string"}},
        },
        "root_selector": {"type": "string"},
        "columns": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "text", "type"],
                "properties": {
                    "selector": {"type": "string", "minLength": 1},
                    "text": {"type": "string", "minLength": 1},
                    "type": {"enum": ["string", "number", "timestamp", "boolean"]},
                },
            },
        },
    },
}
#: Options of Grafana's alertlist panel (public/app/plugins/panel/alertlist/types.ts).
ALERTLIST_OPTIONS = {
    "viewMode",
    "groupMode",
    "groupBy",
    "maxItems",
    "sortOrder",
    "dashboardAlerts",
    "alertName",
    "alertInstanceLabelFilter",
    "datasource",
    "folder",
    "showInstances",
    "showInactiveAlerts",
    "stateFilter",
}


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
    # Targets: Prometheus queries (the SDK model), or the Infinity query (no SDK model).
    b.defs["dashboard.Panel"]["allOf"][0]["properties"]["targets"] = {
        "type": "array",
        "items": {
            "if": {
                "properties": {"datasource": {"properties": {"type": {"const": INFINITY}}}},
                "required": ["datasource"],
            },
            "then": INFINITY_QUERY_SCHEMA,
            "else": b.ref(pm.Dataquery),
        },
    }
    annotation = b.defs["dashboard.AnnotationQuery"]["properties"]
    annotation.update(
        {
            "titleFormat": {"type": "string"},
            "textFormat": {"type": "string"},
            "tagKeys": {"type": "string"},
            "useValueForTime": {"type": "boolean"},
        }
    )
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
    configmaps = gen.KUBERNETES_OUT.read_text(encoding="utf-8")
    assert gen.render_configmaps() == configmaps, "grafana-dashboards.yaml is stale"


def test_configmaps_carry_the_committed_dashboards() -> None:
    gen = load_generator()
    docs = list(yaml.safe_load_all(gen.KUBERNETES_OUT.read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap"] * len(EXPECTED)
    seen = {}
    for doc in docs:
        assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert doc["metadata"]["annotations"]["grafana_folder"] == "netmon-exporter"
        ((key, text),) = doc["data"].items()
        seen[key] = text
    assert seen == {
        f"{name}.json": (DASH_DIR / f"{name}.json").read_text(encoding="utf-8") for name in EXPECTED
    }


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
    assert (tmp_path / "grafana-dashboards.yaml").is_file()  # never the committed one


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_validates_against_sdk_schema(name: str) -> None:
    validate(committed()[name])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_round_trips_through_sdk_models(name: str) -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    data = committed()[name]
    again = json.loads(json.dumps(dm.Dashboard.from_json(data), cls=JSONEncoder))
    # The SDK's AnnotationQuery drops the Prometheus annotation keys it has no model for.
    gen = load_generator()
    for annotation in data["annotations"]["list"]:
        for key in gen.PROMETHEUS_ANNOTATION_KEYS:
            annotation.pop(key, None)
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
        lambda d: d["annotations"]["list"][0].update(titelFormat="{{alertname}}"),
        lambda d: _findings(d)["targets"][0].update(parser="regex"),
        lambda d: _findings(d)["targets"][0]["columns"][0].pop("selector"),
        lambda d: _findings(d)["targets"][0].update(expr="up"),
    ],
    ids=[
        "unknown-key",
        "gridpos-type",
        "target-format",
        "stat-option-enum",
        "variable-refresh",
        "missing-required",
        "annotation-key",
        "infinity-parser",
        "infinity-column",
        "infinity-unknown-key",
    ],
)
def test_sdk_schema_rejects_invalid_dashboards(mutate: Any) -> None:
    broken = copy.deepcopy(committed()["netmon-overview"])
    broken["panels"].append(copy.deepcopy(_findings(committed()["netmon-detections"])))
    assert broken["panels"][1]["type"] == "stat"
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def _findings(d: dict[str, Any]) -> dict[str, Any]:
    (table,) = [p for p in data_panels(d) if p["title"] == "Current security findings"]
    return table


def _check_expr(where: str, expr: str) -> None:
    assert SELECTOR in expr, f"{where}: not filtered by $job, $site and $instance"
    for fn, window in re.findall(r"\b(rate|irate|increase|changes)\(\s*[^\[]*\[([^\]]+)\]", expr):
        allowed = {"$__rate_interval"} | ({"$__range"} if fn == "increase" else set())
        assert window in allowed, f"{where}: {fn}(...[{window}])"
    assert not re.search(r"\[\d+[smhd]\]", expr), f"{where}: hard-coded range"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_conventions(name: str) -> None:
    d = committed()[name]
    assert d["uid"] == name
    assert "netmon" in d["tags"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert list(variables) == ["datasource", "site", "job", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in ("site", "job", "instance"):
        assert variables[var]["type"] == "query", var
        assert variables[var]["includeAll"] and variables[var]["multi"], var
        assert variables[var]["query"].startswith("label_values(netmon_build_info"), var
        assert variables[var]["query"].endswith(f", {var})"), var
    # "All sites" must also match series without a site label (a site's own Prometheus).
    assert variables["site"]["allValue"] == ".*"
    assert variables["job"]["allValue"] == variables["instance"]["allValue"] == ".+"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in data_panels(d):
        where = f"{name} / {p['title']}"
        assert p.get("description"), f"{where}: no description"
        if p["type"] == "alertlist":
            continue  # reads alert rules, not queries: test_alert_list_panel
        if p["datasource"]["type"] == INFINITY:
            continue  # reads Alertmanager: test_findings_table
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert p["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert p["targets"], f"{where}: no query"
        for t in p["targets"]:
            _check_expr(where, t["expr"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_alerts_detections_restarts_and_reloads_annotate_every_time_series(name: str) -> None:
    d = committed()[name]
    annotations = {a["name"]: a for a in d["annotations"]["list"]}
    assert set(annotations) == {"Netmon alerts", "Detections", "Restarts", "Config reloads"}
    for a in annotations.values():
        where = f"{name} / annotation {a['name']}"
        assert a["enable"] and not a["hide"], where
        assert a["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert "filter" not in a, f"{where}: limited to some panels"
        assert a["titleFormat"] and a["textFormat"] and a["tagKeys"], where
        _check_expr(where, a["expr"])
    assert 'alertname=~"Netmon.+"' in annotations["Netmon alerts"]["expr"]
    assert 'alertstate="firing"' in annotations["Netmon alerts"]["expr"]
    assert any(p["type"] == "timeseries" for p in data_panels(d))


def test_alert_list_panel() -> None:
    d = committed()["netmon-overview"]
    (panel,) = [p for p in data_panels(d) if p["type"] == "alertlist"]
    options = panel["options"]
    assert set(options) == ALERTLIST_OPTIONS
    # The alert list names its rule source by data source *name*: the provisioned one.
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert options["datasource"] == ds["datasources"][0]["name"]
    assert options["alertName"] == "Netmon"
    assert options["stateFilter"]["firing"] and not options["stateFilter"]["normal"]


def test_findings_table() -> None:
    """Who did what to whom: the columns are the labels the daemon really pushes."""
    from netmon_exporter.alerting import SERVICE, build_annotations, build_labels
    from netmon_exporter.detection import Detection

    gen = load_generator()
    table = _findings(committed()["netmon-detections"])
    assert table["type"] == "table"
    (target,) = table["targets"]
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "alertmanager.yml").read_text()
    )
    infinity = next(d for d in provisioned["datasources"] if d["type"] == INFINITY)
    assert table["datasource"] == target["datasource"] == {"type": INFINITY, "uid": infinity["uid"]}
    url = urllib.parse.urlsplit(target["url"])
    assert url.path == "/api/v2/alerts"
    query = urllib.parse.parse_qs(url.query)
    assert query["filter"] == [f'service="{SERVICE}"']
    assert query["active"] == ["true"] and query["silenced"] == ["false"]
    det = Detection("port_scan", "critical", "10.0.0.66", "10.0.0.5:22", 0.0, 60.0)
    alert = {
        "labels": build_labels(det, det.severity),
        "annotations": build_annotations(det, 0.0, 60.0),
        "startsAt": "2026-01-01T00:00:00Z",
    }
    values = {}
    for column in target["columns"]:
        node: Any = alert
        for part in column["selector"].split("."):
            node = node[part]
        values[column["text"]] = node
    assert values["Source"] == "10.0.0.66" and values["Target"] == "10.0.0.5:22"
    assert values["Detector"] == "port_scan" and values["Severity"] == "critical"
    assert [c[0] for c in gen.FINDINGS_COLUMNS] == [c["text"] for c in target["columns"]]


def test_layout_fits_the_grid() -> None:
    for name, d in committed().items():
        for p in panels(d):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{name} / {p['title']}"
            assert g["h"] >= 1


def test_worker_metrics_are_the_daemons() -> None:
    """The worker series the dashboards use are the ones the daemon's collector exposes."""
    import netmon_exporter.metrics as metrics

    helps = getattr(metrics, "WORKER_PROCESS_HELP", None)
    if helps is None:
        pytest.skip("worker process metrics not in netmon_exporter/metrics.py yet")
    names = set()
    for key in helps:
        names |= {f"netmon_{key}", f"netmon_{key}_total"}
    assert names >= WORKER_METRICS


def test_every_query_uses_only_exported_metrics() -> None:
    exposed = exposed_metric_names() | NON_EXPORTER_METRICS | WORKER_METRICS
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
    am = yaml.safe_load((prov / "datasources" / "alertmanager.yml").read_text())
    by_type = {d["type"]: d for d in am["datasources"]}
    assert by_type["alertmanager"]["uid"] == "alertmanager"
    assert by_type["alertmanager"]["jsonData"]["implementation"] == "prometheus"
    infinity = by_type[INFINITY]
    assert infinity["jsonData"]["allowedHosts"] == [infinity["url"]]
    dash = yaml.safe_load((prov / "dashboards" / "netmon.yml").read_text())
    (provider,) = dash["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/netmon"
    for d in committed().values():
        current = {v["name"]: v for v in d["templating"]["list"]}["datasource"]["current"]
        assert current["value"] == source["uid"]
