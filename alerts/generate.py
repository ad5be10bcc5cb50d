"""Generate netmon-exporter's Prometheus alert rules: a small monitoring mixin.

Run ``python alerts/generate.py`` to rewrite the committed rule files, or
``python alerts/generate.py --check`` to fail when they differ from what this script
generates. Two files are generated from the same rules:

- ``alerts/netmon.rules.yml``: a Prometheus rule file for the scrape job ``netmon``
  (``prometheus/prometheus.yml``, the compose stack), tested by
  ``alerts/netmon.rules.test.yml`` (``promtool test rules``);
- ``deploy/kubernetes/base/prometheusrule.yaml``: the same rules as a prometheus-operator
  ``PrometheusRule`` for the job ``netmon-exporter`` (the Service the ServiceMonitor
  scrapes).

Like the monitoring mixins (node-mixin, kubernetes-mixin), everything site-specific is a
parameter (:class:`MixinConfig`): the selector every netmon series is matched with
(``job``, ``site``, ...), the labels one exporter is identified by, the runbook URL
pattern (``%s`` is the alert name in lower case, the anchor of its section in
``alerts/runbook.md``) and the Grafana base URL for ``dashboard_url``. For your own
deployment, generate a copy with your values::

    python alerts/generate.py --selector 'job="netmon", site="dmz"' \\
        --runbook-url-pattern 'https://git.corp/netmon/blob/main/alerts/runbook.md#%s' \\
        --grafana-url https://grafana.corp --output my.rules.yml

Severities: ``critical`` pages, ``warning`` opens a ticket. A sensor that has gone blind
pages, whichever way it went blind: process down or gone from service discovery, a critical
health check failing (capture directory missing or unreadable, state or output not
writable), no capture picked up for ``capture_silence_minutes``, or captures picked up that
yield no flows. ``category`` is ``health`` for the processor's own state and ``security``
for rules about findings; ``prometheus/alertmanager.yml`` routes on it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from generated_files import write_or_check  # noqa: E402  (scripts/generated_files.py)

#: Placeholder: set it to where your copy of this repository's runbook is published.
DEFAULT_RUNBOOK_URL_PATTERN = (
    "https://git.example.com/netmon/netmon-exporter/blob/main/alerts/runbook.md#%s"
)
#: Grafana of the compose stack (published on 127.0.0.1:3000); set yours.
DEFAULT_GRAFANA_URL = "http://localhost:3000"


@dataclass(frozen=True)
class MixinConfig:
    """Everything site-specific in the rules."""

    #: Label matchers every netmon series is selected with (the scrape job, and for
    #: example ``site="dmz"`` on a Prometheus that holds several sites).
    selector: str = 'job="netmon"'
    #: Labels that identify one exporter: aggregations keep them and joins match on them.
    #: Add ``site`` when rules run on a Prometheus that federates several sites.
    group_labels: tuple[str, ...] = ("job", "instance")
    #: node_exporter series of the capture hosts, and the file systems captures live on.
    node_selector: str = 'job="node"'
    filesystem_selector: str = (
        'fstype!~"tmpfs|ramfs|devtmpfs|squashfs|overlay|nsfs|fuse.lxcfs", mountpoint!~"/boot.*"'
    )
    #: ``%s`` is replaced by the alert name in lower case.
    runbook_url_pattern: str = DEFAULT_RUNBOOK_URL_PATTERN
    grafana_url: str = DEFAULT_GRAFANA_URL
    #: A sensor that picks up no capture for this long is blind. Keep it at 3 or more
    #: times your capture rotation period (tcpdump -G).
    capture_silence_minutes: int = 10
    #: How long a direct sign of blindness (down, unhealthy) lasts before it pages.
    blind_for: str = "5m"
    #: Extra labels on every PrometheusRule object (e.g. the ``release`` label that
    #: kube-prometheus-stack's ruleSelector matches).
    kubernetes_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    name: str
    expr: str
    severity: str
    category: str
    summary: str
    description: str
    dashboard: str
    for_: str | None = None
    #: Labels of the alert that are dashboard variables (``var-<label>`` in dashboard_url).
    dashboard_vars: tuple[str, ...] | None = None


_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def _words(duration: str) -> str:
    """``5m`` -> ``5 minutes``, for descriptions."""
    n, unit = int(duration[:-1]), _UNITS[duration[-1]]
    return f"{n} {unit}" + ("" if n == 1 else "s")


class _Mixin:
    """Builds the rule groups for one configuration."""

    def __init__(self, cfg: MixinConfig) -> None:
        self.cfg = cfg
        self.by = ", ".join(cfg.group_labels)

    # PromQL helpers -------------------------------------------------------------

    def s(self, *matchers: str) -> str:
        """``{selector, matchers...}`` for a netmon series."""
        return "{" + ", ".join([self.cfg.selector, *matchers]) + "}"

    def node(self) -> str:
        return "{" + ", ".join([self.cfg.node_selector, self.cfg.filesystem_selector]) + "}"

    def sum_by(self, inner: str) -> str:
        return f"sum by ({self.by}) ({inner})"

    def failed_share_over(self, failed_total: str, done_total: str, share: float) -> str:
        """The 15-minute share of failures among attempts (failed + done) is above ``share``."""
        failed = self.sum_by(f"rate({failed_total}{self.s()}[15m])")
        done = self.sum_by(f"rate({done_total}{self.s()}[15m])")
        return f"{failed}\n/\n(\n  {done}\n  + {failed}\n)\n> {share}"

    def failing_checks(self) -> str:
        """Template text listing the failing health checks of the alert's exporter."""
        matchers = ", ".join(f"{label}=%q" for label in self.cfg.group_labels)
        args = " ".join(f"$labels.{label}" for label in self.cfg.group_labels)
        query = f"netmon_health_check_ok{{{matchers}}} == 0"
        return (
            f'{{{{ range printf "{query}" {args} | query }}}}{{{{ .Labels.check }}}} {{{{ end }}}}'
        )

    # the rules ------------------------------------------------------------------

    def groups(self) -> list[tuple[str, list[Rule]]]:
        return [
            ("netmon-availability", self.availability()),
            ("netmon-health", self.health()),
            ("netmon-blind-sensor", self.blind()),
            ("netmon-processing", self.processing()),
            ("netmon-resources", self.resources()),
            ("netmon-dependencies", self.dependencies()),
            ("netmon-detections", self.detections()),
        ]

    def availability(self) -> list[Rule]:
        c = self.cfg
        return [
            Rule(
                "NetmonExporterDown",
                f"up{self.s()} == 0",
                "critical",
                "health",
                "netmon-exporter {{ $labels.instance }} cannot be scraped",
                "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) "
                f"for {_words(c.blind_for)}. The sensor is blind: captures are not being processed, or "
                "not being reported.",
                "netmon-overview",
                for_=c.blind_for,
            ),
            Rule(
                "NetmonExporterAbsent",
                f"absent(up{self.s()})",
                "critical",
                "health",
                "No netmon-exporter target is known to Prometheus",
                f"Prometheus has had no scrape target matching {c.selector} for {_words(c.blind_for)}, "
                "so none of the other Netmon alerts can fire. The target was removed from the "
                "scrape configuration or service discovery lost it.",
                "netmon-overview",
                for_=c.blind_for,
                dashboard_vars=(),
            ),
            Rule(
                "NetmonExporterRestarting",
                f"changes(process_start_time_seconds{self.s()}[30m]) > 2",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }} restarted {{ $value }} times in 30 minutes",
                "The process start time of {{ $labels.instance }} changed {{ $value }} times in "
                "the last 30 minutes: the daemon is crash-looping or being killed (for example "
                "by the OOM killer or a failing health check).",
                "netmon-overview",
            ),
        ]

    def health(self) -> list[Rule]:
        c = self.cfg
        unhealthy = self.s('state="unhealthy"')
        degraded = self.s('state="degraded"')
        return [
            Rule(
                "NetmonUnhealthy",
                f"netmon_health_state{unhealthy} == 1",
                "critical",
                "health",
                "netmon-exporter {{ $labels.instance }} is unhealthy",
                '{{ $labels.instance }} has reported the health state "unhealthy" for '
                f"{_words(c.blind_for)} and is not processing captures. Failing checks: "
                f"{self.failing_checks()} (reasons in GET /health and in the log).",
                "netmon-overview",
                for_=c.blind_for,
            ),
            Rule(
                "NetmonDegraded",
                f"netmon_health_state{degraded} == 1",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }} is degraded",
                '{{ $labels.instance }} has reported the health state "degraded" for 15 '
                "minutes: it still processes captures, but a check fails. Failing checks: "
                f"{self.failing_checks()} (reasons in GET /health and in the log).",
                "netmon-overview",
                for_="15m",
            ),
            Rule(
                "NetmonConfigReloadFailed",
                f"max_over_time(netmon_config_last_reload_successful{self.s()}[5m]) == 0",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }} refused its new configuration",
                "The last configuration reload of {{ $labels.instance }} failed and has not "
                "succeeded for 5 minutes. The previous configuration is still running; the "
                "edited file will also be refused at the next restart.",
                "netmon-errors",
            ),
        ]

    def blind(self) -> list[Rule]:
        c = self.cfg
        silence = c.capture_silence_minutes * 60
        attempts = (
            f"{self.sum_by(f'increase(netmon_files_processed_total{self.s()}[10m])')}\n"
            f"+ {self.sum_by(f'increase(netmon_files_failed_total{self.s()}[10m])')}"
        )
        return [
            Rule(
                "NetmonNoCapturesArriving",
                f"time() - netmon_last_activity_timestamp_seconds{self.s()} > {silence}\n"
                f"and on ({self.by})\n"
                f"time() - process_start_time_seconds{self.s()} > {silence}",
                "critical",
                "health",
                "netmon-exporter {{ $labels.instance }} has picked up no capture for "
                f"{c.capture_silence_minutes} minutes",
                "{{ $labels.instance }} has not started processing a file for more than "
                f"{c.capture_silence_minutes} minutes although it has been running that long. "
                "The sensor is blind: the capture tool has stopped, writes elsewhere, or its "
                "files do not match capture.patterns.",
                "netmon-performance",
                for_="5m",
            ),
            Rule(
                "NetmonCapturesYieldNoFlows",
                f"(\n  {attempts.replace(chr(10), chr(10) + '  ')}\n) > 0\n"
                f"unless on ({self.by})\n"
                f"{self.sum_by(f'increase(netmon_flows_total{self.s()}[10m])')} > 0",
                "critical",
                "health",
                "netmon-exporter {{ $labels.instance }}: captures arrive but yield no flows",
                '{{ $labels.instance }} picked up {{ $value | printf "%.0f" }} file(s) in the '
                "last 10 minutes and produced no flow from them, for 5 minutes. The sensor is "
                "blind: the files fail, are empty, hold no IP traffic (wrong interface or "
                "capture filter), or use a link type that is not decoded.",
                "netmon-traffic",
                for_="5m",
            ),
        ]

    def processing(self) -> list[Rule]:
        by = self.by
        return [
            Rule(
                "NetmonBacklogGrowing",
                f"netmon_backlog_files{self.s()} > 10\n"
                f"and deriv(netmon_backlog_files{self.s()}[15m]) > 0",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }} is falling behind "
                "({{ $value }} files waiting)",
                "More than 10 files wait on {{ $labels.instance }} and the backlog has kept "
                "growing for 15 minutes: captures arrive faster than they are processed.",
                "netmon-performance",
                for_="15m",
            ),
            Rule(
                "NetmonFileLagHigh",
                "histogram_quantile(0.9,\n"
                f"  sum by ({by}, le) (rate(netmon_file_lag_seconds_bucket{self.s()}[10m]))\n"
                ") > 300",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }}: files wait "
                "{{ $value | humanizeDuration }} before processing",
                "90% of files on {{ $labels.instance }} were processed up to "
                "{{ $value | humanizeDuration }} after they became ready (threshold 5 minutes) "
                "for 10 minutes. Metrics, reports and detections arrive late.",
                "netmon-performance",
                for_="10m",
            ),
            Rule(
                "NetmonFileFailureRatioHigh",
                self.failed_share_over(
                    "netmon_files_failed_total", "netmon_files_processed_total", 0.1
                ),
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }}: "
                "{{ $value | humanizePercentage }} of file attempts fail",
                "{{ $value | humanizePercentage }} of file processing attempts on "
                "{{ $labels.instance }} failed over the last 15 minutes (threshold 10%). "
                "Failing files are retried and then quarantined.",
                "netmon-errors",
                for_="15m",
            ),
            Rule(
                "NetmonFilesQuarantined",
                f"sum by ({by}, kind, reason) "
                f"(increase(netmon_files_quarantined_total{self.s()}[30m])) > 0",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }} quarantined {{ $labels.kind }} files "
                "({{ $labels.reason }})",
                '{{ $value | printf "%.0f" }} {{ $labels.kind }} file(s) on '
                "{{ $labels.instance }} were moved to quarantine in the last 30 minutes after "
                "exhausting their retries (reason {{ $labels.reason }}). Their traffic is "
                "missing from flows, windows and detections.",
                "netmon-errors",
            ),
            Rule(
                "NetmonFilesIgnored",
                f"sum by ({by}, reason) (increase(netmon_files_ignored_total{self.s()}[30m])) > 0",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }} ignores capture files "
                "({{ $labels.reason }})",
                '{{ $value | printf "%.0f" }} file(s) matching capture.patterns on '
                "{{ $labels.instance }} were never opened in the last 30 minutes because they "
                "are {{ $labels.reason }} files (symbolic links unless capture.follow_symlinks; "
                "FIFOs, sockets, devices). Their traffic is not analysed.",
                "netmon-errors",
            ),
            Rule(
                "NetmonCaptureClockSkew",
                f"sum by ({by}) (increase(netmon_files_clock_skew_total{self.s()}[30m])) > 0",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }}: capture files dated in the future",
                '{{ $value | printf "%.0f" }} capture file(s) on {{ $labels.instance }} had a '
                "modification time in the future in the last 30 minutes: the clock of the "
                "host writing them is ahead. They are processed once their size is stable, "
                "but windows and lag are measured against a wrong clock.",
                "netmon-performance",
            ),
        ]

    def resources(self) -> list[Rule]:
        n = self.node()
        return [
            Rule(
                "NetmonFlowsEvicted",
                f"sum by ({self.by}) (increase(netmon_flows_evicted_total{self.s()}[15m])) > 0",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }} ends flows early: flow table full",
                '{{ $value | printf "%.0f" }} flow(s) on {{ $labels.instance }} were ended '
                "early in the last 15 minutes because a worker's flow table reached "
                "flows.max_open_flows. Their features (durations, counts) are cut short.",
                "netmon-traffic",
            ),
            Rule(
                "NetmonFileDescriptorsNearLimit",
                f"process_open_fds{self.s()} / process_max_fds > 0.8",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }} uses "
                "{{ $value | humanizePercentage }} of its file descriptors",
                "The netmon-exporter process on {{ $labels.instance }} has used more than 80% "
                "of its file descriptor limit for 15 minutes. At the limit it cannot open "
                "captures or accept scrapes.",
                "netmon-performance",
                for_="15m",
            ),
            Rule(
                "NetmonCaptureDiskFillingUp",
                f"node_filesystem_avail_bytes{n} / node_filesystem_size_bytes < 0.2\n"
                f"and predict_linear(node_filesystem_avail_bytes{n}[6h], 24 * 3600) < 0\n"
                "and node_filesystem_readonly == 0",
                "warning",
                "health",
                "{{ $labels.mountpoint }} on {{ $labels.instance }} fills up within 24 hours",
                "The file system {{ $labels.mountpoint }} ({{ $labels.device }}) on "
                "{{ $labels.instance }} has {{ $value | humanizePercentage }} space left and "
                "at the rate of the last 6 hours will be full within a day. When the capture "
                "disk is full, the capture tool stops writing and the sensor goes blind.",
                "netmon-overview",
                for_="1h",
                dashboard_vars=(),
            ),
            Rule(
                "NetmonCaptureDiskAlmostFull",
                f"node_filesystem_avail_bytes{n} / node_filesystem_size_bytes < 0.05\n"
                "and node_filesystem_readonly == 0",
                "critical",
                "health",
                "{{ $labels.mountpoint }} on {{ $labels.instance }} is almost full",
                "The file system {{ $labels.mountpoint }} ({{ $labels.device }}) on "
                "{{ $labels.instance }} has only {{ $value | humanizePercentage }} space left "
                "for 15 minutes. The capture tool is about to stop writing: the sensor goes "
                "blind.",
                "netmon-overview",
                for_="15m",
                dashboard_vars=(),
            ),
        ]

    def dependencies(self) -> list[Rule]:
        by = self.by
        return [
            Rule(
                "NetmonLLMSummariesFailing",
                self.failed_share_over(
                    "netmon_llm_summaries_failed_total", "netmon_llm_summaries_total", 0.5
                ),
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }}: LLM summaries failing "
                "({{ $value | humanizePercentage }})",
                "{{ $value | humanizePercentage }} of window summaries on {{ $labels.instance }} "
                "could not be written by the LLM endpoint over 15 minutes; the plain templated "
                "summary is used instead. Flow processing is not affected.",
                "netmon-errors",
                for_="15m",
            ),
            Rule(
                "NetmonAlertmanagerPushFailing",
                f"sum by ({by}) (increase(netmon_alerts_failed_total{self.s()}[10m])) > 0",
                "warning",
                "health",
                "netmon-exporter {{ $labels.instance }} cannot deliver detections to Alertmanager",
                '{{ $labels.instance }} failed to deliver {{ $value | printf "%.0f" }} '
                "detection alert(s) to Alertmanager in the last 10 minutes, and has kept "
                "failing for 10 minutes. Detections are still in the window reports but nobody "
                "is notified.",
                "netmon-errors",
                for_="10m",
            ),
        ]

    def detections(self) -> list[Rule]:
        by = f"{self.by}, detector"
        d = f"netmon_detections_total{self.s()}"
        return [
            Rule(
                "NetmonDetectionRateSpike",
                f"sum by ({by}) (increase({d}[10m])) > 10\n"
                "and\n"
                f"sum by ({by}) (rate({d}[10m]))\n"
                f"> 5 * sum by ({by}) (rate({d}[6h] offset 10m))",
                "warning",
                "security",
                "{{ $labels.detector }} detections spiking on {{ $labels.instance }}",
                '{{ $labels.detector }} raised {{ $value | printf "%.0f" }} detections on '
                "{{ $labels.instance }} in the last 10 minutes, more than 5 times its rate over "
                "the 6 hours before. Either an incident is under way or the detector's "
                "thresholds no longer fit the traffic.",
                "netmon-detections",
            ),
        ]

    # output ---------------------------------------------------------------------

    def dashboard_url(self, rule: Rule) -> str:
        labels = self.cfg.group_labels if rule.dashboard_vars is None else rule.dashboard_vars
        query = "&".join(f"var-{x}={{{{ $labels.{x} | urlquery }}}}" for x in labels)
        url = f"{self.cfg.grafana_url.rstrip('/')}/d/{rule.dashboard}"
        return f"{url}?{query}" if query else url

    def rule_dict(self, rule: Rule) -> dict[str, Any]:
        out: dict[str, Any] = {"alert": rule.name, "expr": rule.expr}
        if rule.for_:
            out["for"] = rule.for_
        out["labels"] = {"severity": rule.severity, "category": rule.category}
        out["annotations"] = {
            "summary": rule.summary,
            "description": rule.description,
            "runbook_url": self.cfg.runbook_url_pattern.replace("%s", rule.name.lower()),
            "dashboard_url": self.dashboard_url(rule),
        }
        return out

    def rule_groups(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "rules": [self.rule_dict(r) for r in rules]}
            for name, rules in self.groups()
        ]


# --------------------------------------------------------------------------- rendering


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so expressions stay readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True, indent=2)


HEADER = """\
# GENERATED by alerts/generate.py ({what}) -- do not edit; regenerate instead.
#
# Alert rules for netmon-exporter's own health. Detections themselves are pushed to
# Alertmanager by the daemon (alertmanager.urls); these rules watch the processor.
# Severity: critical pages, warning opens a ticket; category: health or security
# (prometheus/alertmanager.yml routes on both). A blind sensor is critical whichever way
# it went blind. Every alert has a section in alerts/runbook.md (runbook_url), a dashboard
# (dashboard_url), and a firing and a non-firing case in alerts/netmon.rules.test.yml.
#
# Parameters: selector {selector}, per-exporter labels ({by}),
# runbook URLs {runbook}, Grafana {grafana}.
"""


def _header(cfg: MixinConfig, what: str) -> str:
    return HEADER.format(
        what=what,
        selector=cfg.selector,
        by=", ".join(cfg.group_labels),
        runbook=cfg.runbook_url_pattern,
        grafana=cfg.grafana_url,
    )


def render_rules(cfg: MixinConfig, what: str = "default parameters") -> str:
    """A Prometheus rule file (``rule_files``), as committed."""
    return _header(cfg, what) + _dump({"groups": _Mixin(cfg).rule_groups()})


def render_prometheus_rule(cfg: MixinConfig, what: str = "Kubernetes parameters") -> str:
    """The same rules as a prometheus-operator PrometheusRule object."""
    labels = {
        "app.kubernetes.io/name": "netmon-exporter",
        "app.kubernetes.io/component": "alerting-rules",
        **cfg.kubernetes_labels,
    }
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "netmon-exporter", "labels": labels},
        "spec": {"groups": _Mixin(cfg).rule_groups()},
    }
    return _header(cfg, what) + _dump(doc)


#: The configuration of the Kubernetes manifests: the ServiceMonitor scrapes the Service
#: "netmon-exporter", so that is the job label; kube-prometheus-stack's node_exporter job
#: is "node-exporter". The Grafana URL is a placeholder, as the runbook's.
KUBERNETES = MixinConfig(
    selector='job="netmon-exporter"',
    node_selector='job="node-exporter"',
    grafana_url="https://grafana.example.com",
)

TARGETS: dict[str, tuple[Callable[[MixinConfig], str], MixinConfig]] = {
    "alerts/netmon.rules.yml": (render_rules, MixinConfig()),
    "deploy/kubernetes/base/prometheusrule.yaml": (render_prometheus_rule, KUBERNETES),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root to write under")
    custom = parser.add_argument_group(
        "your own parameters (write one file to --output instead of the committed ones)"
    )
    custom.add_argument("--output", type=Path, help="file to write")
    custom.add_argument(
        "--format", choices=("rules", "prometheusrule"), default="rules", help="output format"
    )
    default = MixinConfig()
    custom.add_argument("--selector", default=default.selector)
    custom.add_argument(
        "--group-labels",
        default=",".join(default.group_labels),
        help="comma-separated labels identifying one exporter (add site when federating)",
    )
    custom.add_argument("--node-selector", default=default.node_selector)
    custom.add_argument("--filesystem-selector", default=default.filesystem_selector)
    custom.add_argument("--runbook-url-pattern", default=default.runbook_url_pattern)
    custom.add_argument("--grafana-url", default=default.grafana_url)
    custom.add_argument(
        "--capture-silence-minutes", type=int, default=default.capture_silence_minutes
    )
    args = parser.parse_args(argv)

    if args.output is not None:
        if "%s" not in args.runbook_url_pattern:
            parser.error("--runbook-url-pattern needs a %s for the alert name")
        cfg = replace(
            default,
            selector=args.selector,
            group_labels=tuple(x.strip() for x in args.group_labels.split(",") if x.strip()),
            node_selector=args.node_selector,
            filesystem_selector=args.filesystem_selector,
            runbook_url_pattern=args.runbook_url_pattern,
            grafana_url=args.grafana_url,
            capture_silence_minutes=args.capture_silence_minutes,
        )
        render = render_rules if args.format == "rules" else render_prometheus_rule
        text = render(cfg, "your parameters, below")
        return 0 if write_or_check(args.output, text, args.check) else 1

    stale = [
        rel
        for rel, (render, cfg) in TARGETS.items()
        if not write_or_check(args.root / rel, render(cfg), args.check)
    ]
    if stale:
        print(f"out of date: {', '.join(stale)}; run python alerts/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
