"""Generate netmon-exporter's Grafana dashboards with grafana-foundation-sdk.

Run ``python grafana/dashboards.py`` to rewrite ``grafana/dashboards/*.json`` (the
committed output) and ``deploy/kubernetes/base/grafana-dashboards.yaml`` (the same
dashboards as ConfigMaps for Grafana's dashboard sidecar), or
``python grafana/dashboards.py --check`` to fail when the committed files differ from what
this script generates. The SDK is pinned (``grafana-foundation-sdk==1769699379!11.6.0``)
and targets Grafana 11.6.

Every Prometheus query uses only metrics from ``netmon_exporter/metrics.py`` (plus ``up``,
the ``process_*`` series of the daemon's process collector and the worker process series),
carries the ``$site``, ``$job`` and ``$instance`` variables (:data:`S`), and uses
``$__rate_interval`` in ``rate()``; panels that total a counter over the whole time range
use ``increase(...[$__range])``. Firing Netmon alerts, detections, restarts and config
reloads are annotations on every time series. Two panels read alerts rather than metrics:
an alert list of the firing Netmon rules (Prometheus rules) and a table of the current
security findings, read from Alertmanager's API through the Infinity data source.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import (
    bargauge,
    heatmap,
    piechart,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from generated_files import write_or_check  # noqa: E402  (scripts/generated_files.py)

OUT_DIR = ROOT / "grafana" / "dashboards"
KUBERNETES_OUT = ROOT / "deploy" / "kubernetes" / "base" / "grafana-dashboards.yaml"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The selector every query carries. ``site`` exists only on federated or remote-written
#: series (an external label), so its "All" value ``.*`` also matches series without it.
S = 'job=~"$job", site=~"$site", instance=~"$instance"'
#: Alertmanager's API through the Infinity plugin (grafana/provisioning/datasources).
ALERTMANAGER_API = dm.DataSourceRef(
    type_val="yesoreyeram-infinity-datasource", uid="alertmanager-api"
)
#: Keys of a Prometheus annotation query that Grafana reads but the SDK's AnnotationQuery
#: model lacks; :func:`build` adds them.
PROMETHEUS_ANNOTATION_KEYS = ("titleFormat", "textFormat", "tagKeys", "useValueForTime")
RATE = "[$__rate_interval]"
RANGE = "[$__range]"
TAGS = ["netmon", "netmon-exporter"]
PANEL_HEIGHT = 8


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Q:
    """One query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: pm.PromQueryFormat | None = None


def _targets(builder: Any, queries: Sequence[Q]) -> Any:
    for i, q in enumerate(queries):
        t = prom.Dataquery().expr(q.expr).ref_id(chr(ord("A") + i)).datasource(DATASOURCE)
        if q.legend:
            t = t.legend_format(q.legend)
        t = t.instant() if q.instant else t.range()
        if q.fmt is not None:
            t = t.format(q.fmt)
        builder = builder.with_target(t)
    return builder


def _common(
    builder: Any,
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    width: int,
    height: int,
) -> Any:
    builder = (
        builder.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
    )
    return _targets(builder, queries)


def _thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def _value_texts(mapping: dict[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    return [
        dm.ValueMap(
            options={
                k: dm.ValueMappingResult(text=t, color=c, index=i)
                for i, (k, (t, c)) in enumerate(mapping.items())
            }
        )
    ]


def ts(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    width: int = 12,
    height: int = PANEL_HEIGHT,
    stack: bool = False,
    min_zero: bool = True,
) -> Any:
    p = _common(timeseries.Panel(), title, description, unit, queries, width, height)
    p = (
        p.line_width(1)
        .fill_opacity(10 if not stack else 40)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "lastNotNull", "max"])
        )
        .tooltip(
            cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)
        )
    )
    if stack:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if min_zero:
        p = p.min(0)
    return p


def stat_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    width: int = 6,
    height: int = 4,
    mappings: list[dm.ValueMapping] | None = None,
    thresholds: db.ThresholdsConfig | None = None,
    graph: bool = False,
    calc: str = "lastNotNull",
    text_mode: cm.BigValueTextMode | None = None,
) -> Any:
    p = _common(stat.Panel(), title, description, unit, queries, width, height)
    p = (
        p.graph_mode(cm.BigValueGraphMode.AREA if graph else cm.BigValueGraphMode.NONE)
        .color_mode(cm.BigValueColorMode.VALUE)
        .reduce_options(cb.ReduceDataOptions().calcs([calc]).values(False))
    )
    if text_mode is not None:
        p = p.text_mode(text_mode)
    if mappings:
        p = p.mappings(mappings)
    p = p.thresholds(thresholds or _thresholds((None, "green")))
    return p


def state_timeline(
    title: str,
    description: str,
    queries: Sequence[Q],
    mappings: list[dm.ValueMapping],
    *,
    width: int = 24,
    height: int = PANEL_HEIGHT,
) -> Any:
    p = _common(statetimeline.Panel(), title, description, "none", queries, width, height)
    return (
        p.mappings(mappings)
        .merge_values(True)
        .show_value(cm.VisibilityMode.NEVER)
        .thresholds(_thresholds((None, "red"), (1, "green")))
    )


def heatmap_panel(
    title: str,
    description: str,
    unit: str,
    metric: str,
    *,
    width: int = 12,
    height: int = PANEL_HEIGHT,
) -> Any:
    q = Q(
        f"sum by (le) (increase({metric}_bucket{{{S}}}{RATE}))",
        "{{le}}",
        fmt=pm.PromQueryFormat.HEATMAP,
    )
    p = _common(heatmap.Panel(), title, description, unit, [q], width, height)
    return (
        p.calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(unit))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(hm.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .fill("dark-orange")
            .reverse(False)
        )
        .cell_values(heatmap.CellValues().unit("short"))
        .show_legend()
    )


def table_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    width: int = 12,
    height: int = PANEL_HEIGHT,
) -> Any:
    p = _common(table.Panel(), title, description, unit, queries, width, height)
    return p.show_header(True).cell_height(cm.TableCellHeight.SM)


def pie(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    width: int = 8,
    height: int = PANEL_HEIGHT,
) -> Any:
    p = _common(piechart.Panel(), title, description, unit, queries, width, height)
    return (
        p.pie_type("donut")
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .legend(
            piechart.PieChartLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.RIGHT)
            .show_legend(True)
            .values(["value", "percent"])
        )
    )


def bars(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    width: int = 12,
    height: int = PANEL_HEIGHT,
) -> Any:
    p = _common(bargauge.Panel(), title, description, unit, queries, width, height)
    return (
        p.orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .min(0)
    )


def quantiles(metric: str, by: str = "", qs: Sequence[float] = (0.5, 0.9, 0.99)) -> list[Q]:
    """histogram_quantile queries for a histogram, optionally split by a label."""
    labels = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        Q(
            f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{{{S}}}{RATE})))",
            f"{prefix}p{round(q * 100):g}",
        )
        for q in qs
    ]


def rate(metric: str, by: str = "", extra: str = "", scale: str = "") -> str:
    selector = f"{{{S}{', ' + extra if extra else ''}}}"
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{scale}{grouping}(rate({metric}{selector}{RATE}))"


def in_range(metric: str, by: str) -> str:
    """A counter's increase over the dashboard's time range, summed by ``by``."""
    return f"sum by ({by}) (increase({metric}{{{S}}}{RANGE}))"


def by_label(
    title: str, description: str, unit: str, metric: str, label: str, *, scale: str = "", **kw: Any
) -> Any:
    """A time series of a counter's rate, a series per value of ``label``."""
    return ts(
        title, description, unit, [Q(rate(metric, label, scale=scale), f"{{{{{label}}}}}")], **kw
    )


def counters(
    title: str, description: str, series: dict[str, str], *, unit: str = "cps", **kw: Any
) -> Any:
    """A time series of the rates of a few counters (legend -> metric), a series each."""
    return ts(title, description, unit, [Q(rate(m), legend) for legend, m in series.items()], **kw)


def quantile_panel(
    title: str, description: str, metric: str, *, unit: str = "s", by: str = ""
) -> Any:
    """A time series of a histogram's quantiles (p50, p90, p99), optionally by a label."""
    return ts(title, description, unit, quantiles(metric, by))


def share(title: str, description: str, unit: str, metric: str, label: str, **kw: Any) -> Any:
    """A donut of a counter's increase over the time range, by ``label``."""
    return pie(
        title,
        description,
        unit,
        [Q(in_range(metric, label), f"{{{{{label}}}}}", instant=True)],
        width=6,
        **kw,
    )


def instant_table(title: str, description: str, unit: str, expr: str, **kw: Any) -> Any:
    """A table of one instant query: a row per series, its labels as columns."""
    return table_panel(
        title, description, unit, [Q(expr, instant=True, fmt=pm.PromQueryFormat.TABLE)], **kw
    )


def with_rows(d: db.Dashboard, rows: dict[str, list[Any]]) -> db.Dashboard:
    """Add each row and then its panels (a panel belongs to the row above it)."""
    for title, panels in rows.items():
        d = d.with_row(db.Row(title))
        for panel in panels:
            d = d.with_panel(panel)
    return d


HEALTH_MAP = _value_texts(
    {"0": ("Healthy", "green"), "1": ("Degraded", "orange"), "2": ("Unhealthy", "red")}
)
OK_MAP = _value_texts({"1": ("OK", "green"), "0": ("Failing", "red")})
RELOAD_MAP = _value_texts({"1": ("Succeeded", "green"), "0": ("Failed", "red")})
ON_OFF_MAP = _value_texts({"1": ("On", "green"), "0": ("Off", "text")})


@dataclass(frozen=True)
class Annotation:
    """A Prometheus annotation shown on every time series panel."""

    name: str
    expr: str
    color: str
    title: str
    text: str
    tags: str


ANNOTATIONS = (
    Annotation(
        "Netmon alerts",
        f'ALERTS{{alertname=~"Netmon.+", alertstate="firing", {S}}}',
        "red",
        "{{alertname}}",
        "{{severity}} {{category}} alert on {{instance}}",
        "severity,category",
    ),
    Annotation(
        "Detections",
        f"sum by (detector, severity) (increase(netmon_detections_total{{{S}}}{RATE})) > 0",
        "orange",
        "{{detector}}",
        "{{severity}} detections",
        "detector,severity",
    ),
    Annotation(
        "Restarts",
        f"changes(process_start_time_seconds{{{S}}}{RATE}) > 0",
        "purple",
        "restart",
        "{{instance}} restarted",
        "instance",
    ),
    Annotation(
        "Config reloads",
        f"changes(netmon_config_last_reload_success_timestamp_seconds{{{S}}}{RATE}) > 0",
        "blue",
        "config reloaded",
        "{{instance}} loaded its configuration",
        "instance",
    ),
)


def _query_variable(name: str, label: str, query: str, all_value: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .multi(True)
        .include_all(True)
        .all_value(all_value)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


def new_dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    links = [
        db.DashboardLink("netmon-exporter")
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(["netmon"])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    ]
    d = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .timezone("browser")
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .links(links)
        .with_variable(
            db.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .current(dm.VariableOption(selected=True, text="Prometheus", value="prometheus"))
        )
        # Federated or remote-written data carries the site's external label (scale-out).
        .with_variable(
            _query_variable("site", "Site", "label_values(netmon_build_info, site)", ".*")
        )
        .with_variable(
            _query_variable(
                "job", "Job", 'label_values(netmon_build_info{site=~"$site"}, job)', ".+"
            )
        )
        .with_variable(
            _query_variable(
                "instance",
                "Instance",
                'label_values(netmon_build_info{site=~"$site", job=~"$job"}, instance)',
                ".+",
            )
        )
    )
    for a in ANNOTATIONS:
        d = d.annotation(
            db.AnnotationQuery()
            .name(a.name)
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color(a.color)
            .expr(a.expr)
        )
    return d


def alert_list(title: str, description: str, *, width: int = 24, height: int = 7) -> Any:
    """Firing and pending Netmon alert rules of the Prometheus data source.

    Grafana's alert list reads alert *rules* (here Prometheus's, by data source name); it
    cannot list alerts pushed straight to Alertmanager, such as the security findings:
    :func:`findings_table` shows those.
    """
    options = {
        "viewMode": "list",
        "groupMode": "default",
        "groupBy": [],
        "maxItems": 20,
        "sortOrder": 3,  # importance
        "dashboardAlerts": False,
        "alertName": "Netmon",
        "alertInstanceLabelFilter": "",
        "datasource": "Prometheus",
        "folder": None,
        "showInstances": True,
        "showInactiveAlerts": False,
        "stateFilter": {
            "firing": True,
            "pending": True,
            "recovering": True,
            "noData": False,
            "normal": False,
            "error": True,
        },
    }
    return (
        db.Panel()
        .type("alertlist")
        .title(title)
        .description(description)
        .span(width)
        .height(height)
        .options(options)
    )


#: Alertmanager's v2 API: the active, unsilenced, uninhibited alerts the exporter pushed.
FINDINGS_URL = (
    "/api/v2/alerts?active=true&silenced=false&inhibited=false"
    "&filter=service%3D%22netmon-exporter%22"
)
#: Column -> JSON path in each alert of FINDINGS_URL's answer (``labels`` are the
#: alert's identifying labels, set by netmon_exporter/alerting.py).
FINDINGS_COLUMNS = (
    ("Severity", "labels.severity", "string"),
    ("Detector", "labels.detector", "string"),
    ("Source", "labels.source", "string"),
    ("Target", "labels.target", "string"),
    ("Summary", "annotations.summary", "string"),
    ("Since", "startsAt", "timestamp"),
)


class _Query(cogbuilder.Builder[cogvariants.Dataquery]):
    """A target for a data source the SDK has no model for (kept as plain JSON)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._query = cogruntime.UnknownDataquery(data)

    def build(self) -> cogvariants.Dataquery:
        return self._query


def findings_table(*, width: int = 24, height: int = 9) -> Any:
    query = {
        "refId": "A",
        "datasource": {"type": ALERTMANAGER_API.type_val, "uid": ALERTMANAGER_API.uid},
        "type": "json",
        "source": "url",
        "parser": "backend",
        "format": "table",
        "url": FINDINGS_URL,
        "url_options": {"method": "GET", "data": ""},
        "root_selector": "",
        "columns": [
            {"text": text, "selector": selector, "type": kind}
            for text, selector, kind in FINDINGS_COLUMNS
        ],
    }
    severity_colors = _value_texts(
        {
            "critical": ("critical", "red"),
            "warning": ("warning", "orange"),
            "info": ("info", "blue"),
        }
    )
    return (
        table.Panel()
        .title("Current security findings")
        .description(
            "Detections the exporter pushed to Alertmanager that are active now (not "
            "silenced or inhibited): who (source) did what (detector) to whom (target). "
            "Read from Alertmanager's API through the Infinity data source; silence or "
            "explore them under Alerting > Alert groups (Alertmanager data source)."
        )
        .datasource(ALERTMANAGER_API)
        .unit("none")
        .span(width)
        .height(height)
        .with_target(_Query(query))
        .show_header(True)
        .cell_height(cm.TableCellHeight.SM)
        .mappings(severity_colors)
        .cell_options(cm.TableColorTextCellOptions())
        .sort_by([cb.TableSortByFieldState().display_name("Since").desc(True)])
    )


# --------------------------------------------------------------------------- dashboards


def errors_by_category() -> Any:
    """On the overview and the errors dashboard."""
    return by_label(
        "Errors by category",
        "Errors counted by the daemon, by category.",
        "cps",
        "netmon_errors_total",
        "category",
        stack=True,
    )


def overview() -> db.Dashboard:
    d = new_dashboard(
        "netmon-overview",
        "netmon-exporter / Overview & health",
        "Health, uptime, throughput, errors and the active configuration of netmon-exporter.",
    )
    timing = [
        ("interval", "netmon_config_interval_seconds"),
        ("min age", "netmon_config_min_age_seconds"),
        ("retry delay", "netmon_config_retry_delay_seconds"),
        ("file timeout", "netmon_config_file_timeout_seconds"),
        ("window length", "netmon_config_window_length_seconds"),
    ]
    capacity = [
        ("workers", "netmon_config_workers"),
        ("batch size", "netmon_config_batch_size"),
        ("max retries", "netmon_config_max_retries"),
        ("max windows", "netmon_config_max_windows"),
    ]
    health = [
        stat_panel(
            "Health state",
            "Worst health state across the selected instances (see /health for the reasons).",
            "none",
            [
                Q(
                    f'max(sum by (instance) (netmon_health_state{{{S}, state="degraded"}}) '
                    f'+ 2 * sum by (instance) (netmon_health_state{{{S}, state="unhealthy"}}))',
                    "state",
                )
            ],
            mappings=HEALTH_MAP,
            thresholds=_thresholds((None, "green"), (1, "orange"), (2, "red")),
        ),
        stat_panel(
            "Uptime",
            "Time since the process started (process_start_time_seconds).",
            "s",
            [
                Q(
                    f"time() - max by (instance) (process_start_time_seconds{{{S}}} "
                    f"and on (job, instance) netmon_up)",
                    "{{instance}}",
                )
            ],
        ),
        stat_panel(
            "Files waiting",
            "Files seen and waiting to be processed (backlog).",
            "short",
            [Q(f"sum(netmon_backlog_files{{{S}}})", "backlog")],
            graph=True,
            thresholds=_thresholds((None, "green"), (10, "orange"), (100, "red")),
        ),
        stat_panel(
            "Config reload",
            "Whether the last configuration reload succeeded.",
            "none",
            [Q(f"min(netmon_config_last_reload_successful{{{S}}})", "reload")],
            mappings=RELOAD_MAP,
            thresholds=_thresholds((None, "red"), (1, "green")),
        ),
        state_timeline(
            "Health checks",
            "Each health check per instance: OK or failing. The reason is in "
            "GET /health and the log.",
            [Q(f"netmon_health_check_ok{{{S}}}", "{{instance}} {{check}}")],
            OK_MAP,
        ),
        alert_list(
            "Firing Netmon alerts",
            "Netmon alert rules firing or pending in Prometheus (the data source named "
            "Prometheus), most important first. Security findings pushed by the exporter "
            "are on the Detections dashboard.",
        ),
    ]
    throughput = [
        by_label(
            "Files processed",
            "Files processed successfully, by kind.",
            "cps",
            "netmon_files_processed_total",
            "kind",
        ),
        by_label(
            "Flows completed",
            "Flows completed, by transport protocol.",
            "cps",
            "netmon_flows_total",
            "protocol",
            stack=True,
        ),
        counters(
            "Windows and alerts",
            "Windows closed and reported; detection "
            "alerts delivered to and failed at Alertmanager.",
            {
                "windows": "netmon_windows_processed_total",
                "alerts sent": "netmon_alerts_sent_total",
                "alerts failed": "netmon_alerts_failed_total",
            },
        ),
        errors_by_category(),
    ]
    configuration = [
        stat_panel(
            "Last successful reload",
            "When the configuration was last loaded successfully.",
            "dateTimeFromNow",
            [
                Q(
                    f"max(netmon_config_last_reload_success_timestamp_seconds{{{S}}}) * 1000",
                    "last success",
                )
            ],
            width=6,
        ),
        stat_panel(
            "Active timing settings",
            "processing.interval_seconds, capture.min_age_seconds, "
            "processing.retry_delay_seconds, processing.file_timeout_seconds, "
            "windows.length_seconds.",
            "s",
            [Q(f"max({m}{{{S}}})", name) for name, m in timing],
            width=9,
            text_mode=cm.BigValueTextMode.VALUE_AND_NAME,
        ),
        stat_panel(
            "Active capacity settings",
            "processing.workers, processing.batch_size, "
            "processing.max_retries, windows.max_windows.",
            "short",
            [Q(f"max({m}{{{S}}})", name) for name, m in capacity],
            width=6,
            text_mode=cm.BigValueTextMode.VALUE_AND_NAME,
        ),
        stat_panel(
            "Parallel processing",
            "processing.parallel.",
            "none",
            [Q(f"min(netmon_config_parallel{{{S}}})", "parallel")],
            width=3,
            mappings=ON_OFF_MAP,
        ),
        instant_table(
            "Versions",
            "netmon-exporter, Python and numpy versions per instance.",
            "none",
            f"max by (instance, version, python_version, numpy_version) (netmon_build_info{{{S}}})",
            width=24,
            height=6,
        ),
    ]
    return with_rows(
        d, {"Health": health, "Throughput": throughput, "Configuration": configuration}
    )


def traffic() -> db.Dashboard:
    d = new_dashboard(
        "netmon-traffic",
        "netmon-exporter / Traffic",
        "Packets, bytes and flows by protocol, and the top talkers, from the processed captures.",
    )
    volume = [
        by_label(
            "Packets by protocol",
            "Packets parsed per second of processing, by transport protocol.",
            "pps",
            "netmon_packets_total",
            "protocol",
            stack=True,
        ),
        by_label(
            "Bytes by protocol",
            "Bytes on the wire (original length), by transport protocol.",
            "Bps",
            "netmon_bytes_total",
            "protocol",
            stack=True,
        ),
        by_label(
            "Flows by protocol",
            "Flows completed, by transport protocol.",
            "cps",
            "netmon_flows_total",
            "protocol",
            stack=True,
        ),
        share(
            "Protocol mix (bytes)",
            "Share of bytes by protocol over the time range.",
            "bytes",
            "netmon_bytes_total",
            "protocol",
        ),
        share(
            "Protocol mix (flows)",
            "Share of flows by protocol over the time range.",
            "short",
            "netmon_flows_total",
            "protocol",
        ),
    ]
    top_talkers = [
        bars(
            "Top talkers (last window)",
            "Bytes sent by the top talkers of the last closed window, by rank "
            "(windows.top_talkers ranks per instance). Addresses show when "
            "windows.top_talker_addresses is on; the window reports always list them.",
            "bytes",
            [
                Q(
                    f"topk(10, max by (instance, rank, address) "
                    f"(netmon_top_talker_bytes{{{S}}} > 0))",
                    "#{{rank}} {{address}} ({{instance}})",
                    instant=True,
                )
            ],
        ),
        instant_table(
            "Top talkers by instance",
            "Rank, address (with windows.top_talker_addresses) and bytes of the last closed "
            "window, per instance.",
            "bytes",
            f"max by (instance, rank, address) (netmon_top_talker_bytes{{{S}}})",
        ),
    ]
    parsing = [
        by_label(
            "Packets skipped",
            "Packets not turned into flows, by reason.",
            "pps",
            "netmon_packets_skipped_total",
            "reason",
        ),
        by_label(
            "Packets decapsulated",
            "Packets decoded from inside a tunnel (their flows are the inner packets'), by the "
            "outermost tunnel: a tap on a WAN, VXLAN from AWS Traffic Mirroring, ERSPAN.",
            "pps",
            "netmon_packets_decapsulated_total",
            "tunnel",
        ),
        counters(
            "IP fragments and CSV rows",
            "IPv4/IPv6 fragments seen; rows written to flow CSV files.",
            {
                "fragments": "netmon_ip_fragments_total",
                "flow CSV rows": "netmon_flow_csv_rows_total",
            },
        ),
        counters(
            "Flows ended early (flow table full)",
            "Flows ended before their timeout because a worker's flow table reached "
            "flows.max_open_flows (alert NetmonFlowsEvicted): their features are cut short.",
            {"evicted": "netmon_flows_evicted_total"},
        ),
    ]
    return with_rows(d, {"Volume": volume, "Top talkers": top_talkers, "Parsing": parsing})


def detections() -> db.Dashboard:
    d = new_dashboard(
        "netmon-detections",
        "netmon-exporter / Detections",
        "Detections by detector and severity, classifications and anomaly scores.",
    )
    per_minute = "60 * "
    found = [
        by_label(
            "Detections by detector",
            "Detections raised per minute, by detector.",
            "cpm",
            "netmon_detections_total",
            "detector",
            scale=per_minute,
            stack=True,
        ),
        by_label(
            "Detections by severity",
            "Detections raised per minute, by severity.",
            "cpm",
            "netmon_detections_total",
            "severity",
            scale=per_minute,
            stack=True,
        ),
        ts(
            "Active detections",
            "Detections not yet resolved, by detector.",
            "short",
            [Q(f"sum by (detector) (netmon_detections_active{{{S}}})", "{{detector}}")],
            stack=True,
        ),
    ]
    alerting = [
        by_label(
            "Incidents opened",
            "New incidents per minute, by detector: a finding that continues across windows "
            "stays one incident (one alert) until it has been quiet for "
            "alerting.resolve_after_windows windows.",
            "cpm",
            "netmon_incidents_opened_total",
            "detector",
            scale=per_minute,
            width=8,
            stack=True,
        ),
        ts(
            "Findings suppressed by allow-lists",
            "Findings matched by an ignore entry (ignore.all or ignore.<detector>), per "
            "minute, by detector and what matched. Counted, never pushed; flows and traffic "
            "metrics are unaffected.",
            "cpm",
            [
                Q(
                    rate(
                        "netmon_detections_suppressed_total", "detector, reason", scale=per_minute
                    ),
                    "{{detector}} ({{reason}})",
                )
            ],
            width=8,
            stack=True,
        ),
        ts(
            "Windows held back from Alertmanager",
            "Windows whose end was older than alerting.max_window_age_seconds (backfilled or "
            "replayed captures, a backlog being worked off): reported, not pushed.",
            "cpm",
            [Q(rate("netmon_alert_windows_held_back_total", scale=per_minute), "held back")],
            width=8,
        ),
        instant_table(
            "Detections in range",
            "Detections over the time range, by detector and severity.",
            "short",
            in_range("netmon_detections_total", "detector, severity") + " > 0",
        ),
    ]
    models = [
        by_label(
            "Classifications by class",
            "Flows classified per second, by class (supervised classifier).",
            "cps",
            "netmon_classifications_total",
            "class",
            stack=True,
        ),
        share(
            "Classification mix",
            "Share of classified flows by class over the time range.",
            "short",
            "netmon_classifications_total",
            "class",
        ),
        counters(
            "Flows analysed",
            "Flows passed through detectors and models.",
            {"flows analysed": "netmon_flows_analysed_total"},
            width=6,
        ),
        heatmap_panel(
            "Anomaly scores",
            "Distribution of anomaly scores of analysed flows (0 normal, 1 anomalous).",
            "none",
            "netmon_anomaly_score",
        ),
        quantile_panel(
            "Anomaly score quantiles",
            "Quantiles of the anomaly score (0 normal, "
            "1 anomalous; models.anomaly_threshold marks a flow anomalous).",
            "netmon_anomaly_score",
            unit="none",
        ),
        stat_panel(
            "Models loaded",
            "Whether a model of each kind is loaded on every selected instance "
            "(models.anomaly_path, models.classifier_path).",
            "none",
            [Q(f"min by (kind) (netmon_model_loaded{{{S}}})", "{{kind}}")],
            width=6,
            height=6,
            mappings=_value_texts({"1": ("Loaded", "green"), "0": ("Not loaded", "text")}),
            text_mode=cm.BigValueTextMode.VALUE_AND_NAME,
        ),
        instant_table(
            "Loaded models",
            "Models in use, with algorithm, version, training time and digest.",
            "none",
            f"max by (instance, kind, algorithm, version, trained_at, digest) "
            f"(netmon_model_info{{{S}}})",
            width=18,
            height=6,
        ),
    ]
    return with_rows(
        d,
        {
            "Current findings": [findings_table()],
            "Detections": found,
            "Alerting": alerting,
            "Models": models,
        },
    )


def performance() -> db.Dashboard:
    d = new_dashboard(
        "netmon-performance",
        "netmon-exporter / Processing performance",
        "How long files and windows take, how far behind processing is, and how "
        "busy the workers are.",
    )
    files = [
        quantile_panel(
            "File processing time",
            "Quantiles of the time to process one file, by kind.",
            "netmon_file_processing_seconds",
            by="kind",
        ),
        heatmap_panel(
            "File processing time distribution",
            "Files by processing time.",
            "s",
            "netmon_file_processing_seconds",
        ),
        ts(
            "File size",
            "Average and p90 size of processed files, by kind.",
            "bytes",
            [
                Q(
                    f"sum by (kind) (rate(netmon_file_size_bytes_sum{{{S}}}{RATE})) / "
                    f"sum by (kind) (rate(netmon_file_size_bytes_count{{{S}}}{RATE}))",
                    "{{kind}} mean",
                ),
                *quantiles("netmon_file_size_bytes", "kind", (0.9,)),
            ],
        ),
        counters(
            "Processing throughput",
            "Packets parsed per second, all protocols: "
            "how much traffic the processor gets through.",
            {"packets": "netmon_packets_total"},
            unit="pps",
        ),
    ]
    keeping_up = [
        quantile_panel(
            "Lag from ready to processed",
            "Quantiles of the time between a file becoming ready and being processed.",
            "netmon_file_lag_seconds",
        ),
        heatmap_panel(
            "Lag distribution",
            "Files by lag from ready to processed.",
            "s",
            "netmon_file_lag_seconds",
        ),
        ts(
            "Backlog and in progress",
            "Files waiting, files being processed right now, and files found but not "
            "ready yet (younger than capture.min_age_seconds or still being written).",
            "short",
            [
                Q(f"sum(netmon_backlog_files{{{S}}})", "waiting"),
                Q(f"sum(netmon_files_in_progress{{{S}}})", "in progress"),
                Q(f"sum(netmon_files_not_ready{{{S}}})", "not ready"),
            ],
        ),
        ts(
            "Worker utilisation",
            "Busy workers over configured workers (processing.workers).",
            "percentunit",
            [
                Q(
                    f"sum by (instance) (netmon_workers_busy{{{S}}}) / "
                    f"sum by (instance) (netmon_config_workers{{{S}}})",
                    "{{instance}}",
                )
            ],
        ),
        ts(
            "Time since last success",
            "Seconds since a file was last processed "
            "successfully, and since a file was last picked up.",
            "s",
            [
                Q(
                    f"time() - max by (instance) "
                    f"(netmon_last_success_timestamp_seconds{{{S}}} > 0)",
                    "{{instance}} success",
                ),
                Q(
                    f"time() - max by (instance) "
                    f"(netmon_last_activity_timestamp_seconds{{{S}}} > 0)",
                    "{{instance}} activity",
                ),
            ],
        ),
    ]
    windows = [
        quantile_panel(
            "Window processing time",
            "Quantiles of the time to analyse and report one window.",
            "netmon_window_processing_seconds",
        ),
        ts(
            "Windows kept",
            "Window reports currently kept on disk (windows.max_windows).",
            "short",
            [
                Q(f"sum by (instance) (netmon_windows_kept{{{S}}})", "{{instance}}"),
                Q(f"max(netmon_config_max_windows{{{S}}})", "limit"),
            ],
        ),
        ts(
            "Windows awaiting analysis",
            "Closed windows the detectors have not finished yet (the one being analysed "
            "included). A count that stays above 1 means analysis falls behind; health "
            "check keeping_up fails when the oldest closed more than health.max_lag_seconds ago.",
            "short",
            [Q(f"max by (instance) (netmon_windows_awaiting_analysis{{{S}}})", "{{instance}}")],
        ),
    ]
    resources = [
        ts(
            "CPU",
            "CPU time per second (1 = one core) of the daemon process and of each worker "
            "process (worker label; a replaced worker starts its slot again).",
            "percentunit",
            [
                Q(rate("process_cpu_seconds_total", "instance"), "{{instance}} daemon"),
                Q(
                    rate("netmon_worker_cpu_seconds_total", "instance, worker"),
                    "{{instance}} worker {{worker}}",
                ),
            ],
            width=8,
        ),
        ts(
            "Resident memory",
            "Resident memory of the daemon process and of each worker process.",
            "bytes",
            [
                Q(
                    f"sum by (instance) (process_resident_memory_bytes{{{S}}})",
                    "{{instance}} daemon",
                ),
                Q(
                    f"sum by (instance, worker) (netmon_worker_resident_memory_bytes{{{S}}})",
                    "{{instance}} worker {{worker}}",
                ),
            ],
            width=8,
        ),
        ts(
            "Open file descriptors",
            "Open file descriptors of the daemon process (against its limit, alert "
            "NetmonFileDescriptorsNearLimit at 80%) and of each worker process.",
            "short",
            [
                Q(f"sum by (instance) (process_open_fds{{{S}}})", "{{instance}} daemon"),
                Q(f"max by (instance) (process_max_fds{{{S}}})", "{{instance}} limit"),
                Q(
                    f"sum by (instance, worker) (netmon_worker_open_fds{{{S}}})",
                    "{{instance}} worker {{worker}}",
                ),
            ],
            width=8,
        ),
    ]
    return with_rows(
        d,
        {
            "Files": files,
            "Keeping up": keeping_up,
            "Windows": windows,
            "Process resources": resources,
        },
    )


def errors() -> db.Dashboard:
    d = new_dashboard(
        "netmon-errors",
        "netmon-exporter / Errors & dependencies",
        "Errors, failed files, retries, quarantines, configuration reloads and "
        "the LLM and Alertmanager dependencies.",
    )
    failures = [
        errors_by_category(),
        by_label(
            "Failed file attempts by reason",
            "File processing attempts that "
            "failed, by reason (retried until processing.max_retries).",
            "cps",
            "netmon_files_failed_total",
            "reason",
            stack=True,
        ),
        by_label(
            "Retries by stage",
            "Retries scheduled, by stage.",
            "cps",
            "netmon_retries_total",
            "stage",
        ),
        ts(
            "Failure ratio",
            "Failed attempts over all attempts (alert NetmonFileFailureRatioHigh above 10%).",
            "percentunit",
            [
                Q(
                    f"{rate('netmon_files_failed_total')} / "
                    f"({rate('netmon_files_processed_total')} + "
                    f"{rate('netmon_files_failed_total')})",
                    "failure ratio",
                )
            ],
        ),
    ]
    quarantine = [
        bars(
            "Quarantined in range",
            "Files quarantined over the time range, by kind and reason.",
            "short",
            [
                Q(
                    in_range("netmon_files_quarantined_total", "kind, reason"),
                    "{{kind}} {{reason}}",
                    instant=True,
                )
            ],
        ),
        counters(
            "Quarantines and duplicates",
            "Files quarantined, and files skipped because the ledger already has them done.",
            {
                "quarantined": "netmon_files_quarantined_total",
                "duplicates skipped": "netmon_files_skipped_duplicate_total",
            },
        ),
        ts(
            "Files ignored and dated in the future",
            "Files matching capture.patterns that are never opened, by reason (alert "
            "NetmonFilesIgnored), and files whose modification time was in the future "
            "(alert NetmonCaptureClockSkew).",
            "cps",
            [
                Q(rate("netmon_files_ignored_total", "reason"), "ignored {{reason}}"),
                Q(rate("netmon_files_clock_skew_total"), "clock skew"),
            ],
            width=24,
        ),
    ]
    return with_rows(
        d,
        {
            "Errors": failures,
            "Quarantine and duplicates": quarantine,
            "LLM summaries": [
                counters(
                    "LLM summaries",
                    "Window summaries written by the LLM, and failures "
                    "(the templated summary is used then).",
                    {
                        "written": "netmon_llm_summaries_total",
                        "failed": "netmon_llm_summaries_failed_total",
                    },
                ),
                quantile_panel(
                    "LLM request duration",
                    "Quantiles of LLM request duration.",
                    "netmon_llm_request_seconds",
                ),
            ],
            "Alertmanager": [
                counters(
                    "Detection alerts",
                    "Alerts accepted by Alertmanager, and alerts that could not be delivered.",
                    {"sent": "netmon_alerts_sent_total", "failed": "netmon_alerts_failed_total"},
                ),
                quantile_panel(
                    "Alertmanager push duration",
                    "Quantiles of push duration.",
                    "netmon_alertmanager_push_seconds",
                ),
            ],
            "Configuration reloads": [
                counters(
                    "Reloads",
                    "Configuration reloads attempted and failed.",
                    {
                        "attempted": "netmon_config_reloads_total",
                        "failed": "netmon_config_reload_failures_total",
                    },
                ),
                state_timeline(
                    "Last reload successful",
                    "Whether each instance's last configuration reload "
                    "succeeded (alert NetmonConfigReloadFailed).",
                    [Q(f"netmon_config_last_reload_successful{{{S}}}", "{{instance}}")],
                    RELOAD_MAP,
                    width=12,
                ),
            ],
        },
    )


DASHBOARDS: dict[str, Callable[[], db.Dashboard]] = {
    "netmon-overview": overview,
    "netmon-traffic": traffic,
    "netmon-detections": detections,
    "netmon-performance": performance,
    "netmon-errors": errors,
}


# --------------------------------------------------------------------------- output


def _number_panels(panels: list[Any]) -> None:
    for i, panel in enumerate(panels, start=1):
        panel.id_val = i


def build(name: str) -> dict[str, Any]:
    """Build one dashboard as a JSON-ready dict."""
    dashboard = DASHBOARDS[name]().build()
    _number_panels(dashboard.panels or [])
    rendered: dict[str, Any] = json.loads(json.dumps(dashboard, cls=JSONEncoder))
    extras = {
        a.name: {"titleFormat": a.title, "textFormat": a.text, "tagKeys": a.tags}
        for a in ANNOTATIONS
    }
    for annotation in rendered.get("annotations", {}).get("list", []):
        if annotation.get("name") in extras:
            annotation.update(extras[annotation["name"]], useValueForTime=False)
    return rendered


def render(name: str) -> str:
    """Render one dashboard exactly as committed (sorted keys, 2-space indent, newline)."""
    return json.dumps(build(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings: the dashboards stay readable in the ConfigMaps."""


_Dumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    ),
)


def render_configmaps() -> str:
    """Every dashboard as a ConfigMap that Grafana's dashboard sidecar loads.

    The label ``grafana_dashboard: "1"`` and the folder annotation ``grafana_folder`` are
    the defaults of the sidecar in Grafana's Helm chart (and kube-prometheus-stack).
    """
    docs = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{name}-dashboard",
                "labels": {
                    "app.kubernetes.io/name": "netmon-exporter",
                    "app.kubernetes.io/component": "dashboards",
                    "grafana_dashboard": "1",
                },
                "annotations": {"grafana_folder": "netmon-exporter"},
            },
            "data": {f"{name}.json": render(name)},
        }
        for name in DASHBOARDS
    ]
    header = (
        "# GENERATED by grafana/dashboards.py -- do not edit; run `python grafana/dashboards.py`.\n"
        "# The dashboards of grafana/dashboards/ as ConfigMaps for Grafana's dashboard sidecar.\n"
    )
    return header + yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    parser.add_argument(
        "--kubernetes-out",
        type=Path,
        help=f"the ConfigMaps file (default {KUBERNETES_OUT.relative_to(ROOT)}, or "
        "grafana-dashboards.yaml in --out when --out is given)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="fail if the files in --out differ from the generated ones",
    )
    args = parser.parse_args(argv)
    configmaps = args.kubernetes_out or (
        KUBERNETES_OUT if args.out == OUT_DIR else args.out / "grafana-dashboards.yaml"
    )
    outputs = [(args.out / f"{name}.json", render(name)) for name in DASHBOARDS]
    outputs.append((configmaps, render_configmaps()))
    stale = [
        path for path, text in outputs if not write_or_check(path, text, args.check, context=1)
    ]
    if stale:
        print(
            f"{len(stale)} file(s) out of date: run python grafana/dashboards.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
