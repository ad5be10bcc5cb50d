"""Configuration: YAML decoded into frozen, typed dataclasses, validated all at once.

Every field carries its documentation, range and whether it can change without a
restart in its dataclass metadata; :func:`load_config` reports **every** problem
with its key path (``capture.min_age_seconds: 400 is above the maximum 300``).

Of our own modules this one imports only declarations with no runtime dependencies:
``setting`` (how a key is declared), ``detection`` (the severity set) and
``detectors.catalog`` (each detector's settings, from which the ``detectors``
section is built). It never imports a pipeline stage, numpy or Prometheus, so
``--config.check`` and reloads stay light.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import reprlib
import stat
import string
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .detection import SEVERITIES
from .detectors.catalog import REGISTRY, DetectorSpec
from .setting import setting as _f

# Bounds on what a config file may make us do; the shipped config.yaml is ~11 KiB and
# three levels deep. The pure-Python YAML parser reads ~120 KiB/s of worst-case input (a
# flow list of one-digit items), so 128 KiB keeps even a hostile file near one second.
MAX_CONFIG_BYTES = 128 * 1024
MAX_NESTING = 16  # levels of mappings and lists
MAX_NUMBER_CHARS = 64  # longer integers/floats are refused before Python converts them
MAX_ERRORS = 50  # errors listed; the rest are counted
ECHO_CHARS = 80  # longest value echoed in an error message


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` lists every problem with its key path."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = errors
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(errors))


@dataclass(frozen=True)
class CaptureConfig:
    directory: Path = _f(
        Path("./captures"), "Watched directory where rotated captures arrive.", must_exist=True
    )
    patterns: tuple[str, ...] = _f(
        ("*.pcap", "*.pcapng", "*.pcap.gz", "*.csv"),
        "Glob patterns of files to process (pcap, pcapng, gzip, flow CSV).",
    )
    recursive: bool = _f(False, "Also watch subdirectories.")
    follow_symlinks: bool = _f(
        False,
        "Process symbolic links found in the capture directory (their targets, which may "
        "lie outside it). Off: links are ignored and counted; special files never are opened.",
    )
    min_age_seconds: float = _f(
        10.0,
        "A file is ready once its mtime is this old and its size stopped changing.",
        min=0,
        max=300,
    )
    after_processing: str = _f(
        "keep", "What to do with a processed capture.", choices=("keep", "move", "delete")
    )
    done_directory: Path = _f(
        Path("./captures/done"), "Where processed files go when after_processing is move."
    )
    source_pattern: str = _f(
        r"^(?P<source>.*?)(?:(?:(?:^|[-_.])\d{3,}(?:[-_T]\d{4,6})?|_\d{5}_\d{14})"
        r"\.pcap(?:ng)?(?:\.gz)?|\.pcap(?:ng)?\d+)$",
        "Regex whose 'source' group names a rotation series; files of one "
        "series are processed in time order and flows carried across them. The "
        "default matches what capture tools write when they rotate: epoch seconds "
        "(tcpdump -G with %s), a date and time or a counter of 3 or more digits after "
        "a - _ or . (tcpdump -G with strftime names, rotation scripts), dumpcap's ring "
        "buffer (name_00001_20261129120000.pcapng) and tcpdump -C/-W (name.pcap3). "
        "Other names (tls1.2.pcap, smb311.pcap, quic-29.pcap) stand alone.",
    )
    shard_index: int = _f(
        0,
        "This instance's shard (0-based) when several instances share one directory.",
        min=0,
        max=255,
    )
    shard_count: int = _f(
        1,
        "Number of instances sharing the directory; each file belongs to "
        "exactly one shard by a stable hash of its rotation series (of its "
        "name when it has none).",
        min=1,
        max=256,
    )


@dataclass(frozen=True)
class ProcessingConfig:
    interval_seconds: float = _f(30.0, "Rescan and housekeeping period.", min=10, max=3600)
    workers: int = _f(2, "Worker processes that parse captures.", min=1, max=16)
    parallel: bool = _f(True, "Process several files at once (false: one at a time).")
    batch_size: int = _f(8, "Files dispatched per scheduling round.", min=1, max=10000)
    max_retries: int = _f(3, "Retries of a failing file before it is quarantined.", min=0, max=10)
    retry_delay_seconds: float = _f(
        5.0, "First retry delay; doubles each retry, with jitter.", min=1, max=60
    )
    file_timeout_seconds: float = _f(
        300.0, "A worker taking longer on one file is killed.", min=1, max=86400
    )
    shutdown_timeout_seconds: float = _f(
        30.0,
        "On SIGTERM, time allowed to finish in-flight files before they are handed back.",
        min=0,
        max=3600,
    )


@dataclass(frozen=True)
class FlowsConfig:
    idle_timeout_seconds: float = _f(
        120.0, "A flow with no packet for this long ends.", min=1, max=86400
    )
    active_timeout_seconds: float = _f(
        3600.0, "A flow is cut after being open this long.", min=1, max=86400
    )
    activity_timeout_seconds: float = _f(
        5.0,
        "Gap that separates active from idle periods (CICFlowMeter's activity timeout).",
        min=0.001,
        max=3600,
    )
    carry_across_files: bool = _f(
        True, "Continue flows that cross a rotation boundary into the next file of the same series."
    )
    max_open_flows: int = _f(
        200000,
        "Open flows a worker keeps per capture (about 1 KB each with four packets or more, "
        "about 220 B with up to three, an idle connection's handshake included, 310 B a DNS "
        "query and its answer); a new flow beyond this first ends the least recently active "
        "one (counted in netmon_flows_evicted_total).",
        min=1000,
        max=100000000,
    )
    tunnel_depth: int = _f(
        2,
        "Tunnels opened to reach the packet inside (IP in IP, GRE, ERSPAN, VXLAN on 4789, "
        "Geneve on 6081), as Zeek and Suricata do: its flow is the inner packet's, counted "
        "in netmon_packets_decapsulated_total. 1 opens only the outermost, 0 none: every "
        "packet is the flow of its outer header (a site that runs such tunnels to outside "
        "hosts and wants to see them as flows of their own).",
        min=0,
        max=2,
    )


@dataclass(frozen=True)
class WindowsConfig:
    length_seconds: float = _f(
        60.0, "Window length; windows are aligned to wall-clock multiples.", min=1, max=86400
    )
    max_windows: int = _f(
        100,
        "Window reports kept: those of the newest windows by window time (the report of a "
        "backfilled window older than all of them is deleted at once).",
        min=1,
        max=1000,
    )
    top_talkers: int = _f(
        10,
        "Top-N talkers listed per window report, and ranks of netmon_top_talker_bytes.",
        min=0,
        max=100,
    )
    top_talker_addresses: bool = _f(
        False,
        "Put each top talker's IP address in the address label of netmon_top_talker_bytes: "
        "at most windows.top_talkers series, replaced at each window report, so addresses "
        "churn series in Prometheus. Off: one series per rank, address empty; window "
        "reports and alerts carry the addresses either way.",
    )


@dataclass(frozen=True)
class OutputConfig:
    directory: Path = _f(Path("./output"), "Flow CSVs, window reports and quarantine live here.")
    flows_csv: bool = _f(True, "Write one CICFlowMeter-compatible CSV per processed capture.")
    flows_csv_interim: bool = _f(
        False,
        "Write the per-window slices of flows that cross window boundaries (one row per "
        "flow and window, flow_record 1 or 2) instead of one row per whole flow.",
    )
    retention_hours: float = _f(
        168.0, "Flow CSVs older than this are deleted (0 keeps all).", min=0, max=87600
    )
    max_flow_csv_files: int = _f(
        1000, "At most this many flow CSVs are kept (0: no limit).", min=0, max=1000000
    )


@dataclass(frozen=True)
class StateConfig:
    directory: Path = _f(Path("./state"), "The ledger and the models live here.", restart=True)


@dataclass(frozen=True)
class HealthConfig:
    error_ratio_threshold: float = _f(
        0.2, "Health degrades when this share of recent files failed.", min=0, max=1
    )
    backlog_growth_intervals: int = _f(
        5,
        "Health degrades when the backlog grew over this many consecutive intervals.",
        min=1,
        max=1000,
    )
    max_lag_seconds: float = _f(
        600.0,
        "Health degrades when the oldest waiting file has been ready this long, or the "
        "oldest closed window still waiting for analysis closed this long ago.",
        min=1,
        max=86400,
    )


def detectors_section(registry: Mapping[str, DetectorSpec]) -> type:
    """Build the ``detectors`` section: one sub-section per registered detector, in order."""
    return dataclasses.make_dataclass(
        "DetectorsConfig",
        [(s.name, s.settings, _f(s.settings, s.help, factory=True)) for s in registry.values()],
        frozen=True,
    )


# Derived from the registry, so a detector's section is declared once (in its spec). The
# base is dynamic, so type checkers see ``Any`` attributes (``cfg.detectors.port_scan``).
_DetectorSections: Any = detectors_section(REGISTRY)


@dataclass(frozen=True)
class DetectorsConfig(_DetectorSections):
    """The ``detectors`` section: ``detectors.<name>`` for every name in ``detectors.REGISTRY``."""


@dataclass(frozen=True)
class ModelsConfig:
    anomaly_path: str = _f(
        "",
        "Anomaly model (.skops) from 'netmon-exporter train --baseline'; "
        "empty: none. Relative paths are under state.directory.",
    )
    classifier_path: str = _f("", "Classifier (.skops) from 'train --labelled'; empty: none.")
    anomaly_threshold: float = _f(
        0.6, "Anomaly score (0-1) above which a flow is anomalous.", min=0, max=1
    )
    anomaly_min_flows: int = _f(
        20,
        "A source with at least this many anomalous flows in a "
        "window raises an 'anomaly' detection (0: never).",
        min=0,
        max=100000000,
    )
    anomaly_min_share: float = _f(
        0.5,
        "... and when at least this share of its flows in the "
        "window are anomalous (a busy host's few odd flows are not "
        "a finding).",
        min=0,
        max=1,
    )
    classifier_min_flows: int = _f(
        10,
        "A source with at least this many flows of one "
        "non-benign class raises a 'classifier' detection (0: never).",
        min=0,
        max=100000000,
    )
    severity: str = _f("warning", "Severity of model detections.", choices=SEVERITIES)


@dataclass(frozen=True)
class LLMConfig:
    enabled: bool = _f(False, "Ask an OpenAI-compatible endpoint for a summary of each window.")
    url: str = _f("http://127.0.0.1:11434/v1", "Base URL (Ollama, vLLM, llama.cpp, hosted).")
    model: str = _f("llama3.2", "Model name.")
    api_key_env: str = _f(
        "NETMON_LLM_API_KEY",
        "Environment variable holding the API key (never logged); empty or unset: no key sent.",
    )
    timeout_seconds: float = _f(20.0, "Per-request timeout.", min=1, max=600)
    max_retries: int = _f(
        2, "Retries with backoff before the templated summary is used.", min=0, max=10
    )
    max_tokens: int = _f(300, "Upper bound on the summary's length in tokens.", min=16, max=8192)


@dataclass(frozen=True)
class AlertmanagerConfig:
    urls: tuple[str, ...] = _f((), "Alertmanager base URLs; empty: detections are not pushed.")
    timeout_seconds: float = _f(10.0, "Per-request timeout.", min=1, max=300)
    resend_interval_seconds: float = _f(
        60.0, "Active detections are re-sent this often.", min=5, max=86400
    )
    resolve_after_seconds: float = _f(
        300.0,
        "An incident not seen again for this long (wall clock) is resolved even when no "
        "window closes (captures stopped); usually alerting.resolve_after_windows "
        "resolves it first.",
        min=10,
        max=86400,
    )
    max_alerts_per_push: int = _f(200, "Upper bound of alerts in one push.", min=1, max=100000)


# Placeholders alerting.generator_url may use (each URL-encoded when filled in).
GENERATOR_URL_FIELDS = ("detector", "source", "target", "from_ms", "to_ms")


@dataclass(frozen=True)
class AlertingConfig:
    sensor: str = _f(
        "",
        "This sensor's name, sent as the instance label of every pushed alert (one "
        "sensor's findings apart from another's); empty: the host name.",
    )
    generator_url: str = _f(
        "",
        "Link sent as each alert's generatorURL, e.g. a Grafana detections dashboard; may "
        "use {detector}, {source}, {target}, {from_ms} and {to_ms} (the incident's first and "
        "last window, Unix milliseconds). Empty: the exporter's --web.external-url.",
    )
    max_window_age_seconds: float = _f(
        600.0,
        "A window that ended longer ago than this (replayed or backfilled captures, a "
        "backlog being worked off) gets its report and metrics but is not pushed to "
        "Alertmanager; counted in netmon_alert_windows_held_back_total. 0: push every window.",
        min=0,
        max=31536000,
    )
    resolve_after_windows: int = _f(
        3,
        "An incident (one detector, source and target) not seen in this many windows in "
        "a row is resolved.",
        min=1,
        max=1000,
    )
    max_findings_per_detector: int = _f(
        10,
        "Findings of one detector kept per window (reported and alerted); the rest become "
        "one summary finding ('412 more findings'), so a spoofed flood is not hundreds of "
        "alerts naming innocent addresses.",
        min=1,
        max=10000,
    )
    max_incidents: int = _f(
        10000,
        "Incidents held at most; beyond, resolved ones are forgotten first, then the "
        "least recently seen (Alertmanager resolves those at their endsAt).",
        min=10,
        max=1000000,
    )


# Allow-lists -------------------------------------------------------------------------

#: The ``ignore`` scope that applies to every detector (the others are one per detector).
IGNORE_ALL = "all"


@dataclass(frozen=True)
class IgnoreConfig:
    sources: tuple[str, ...] = _f((), "Source addresses or networks (CIDR).")
    destinations: tuple[str, ...] = _f((), "Destination (target) addresses or networks (CIDR).")
    ports: tuple[int, ...] = _f((), "Destination ports (1-65535).")
    zones: tuple[str, ...] = _f((), "DNS zones (each covers every name under it).")


@dataclass(frozen=True)
class IgnoreAllConfig(IgnoreConfig):
    """``ignore.all``: the same lists as per detector, documented with examples."""

    sources: tuple[str, ...] = _f(
        (), "Source addresses or networks (CIDR), e.g. ['10.0.5.10', '192.0.2.16/28']."
    )
    destinations: tuple[str, ...] = _f(
        (), "Destination (target) addresses or networks (CIDR), e.g. ['10.0.2.25']."
    )
    ports: tuple[int, ...] = _f((), "Destination ports (1-65535), e.g. [25].")
    zones: tuple[str, ...] = _f(
        (), "DNS zones, each covering every name under it, e.g. ['zen.spamhaus.org']."
    )


# Examples shown beside each detector's allow-list in config.yaml (a test checks the names).
IGNORE_EXAMPLES: dict[str, str] = {
    "port_scan": "sources: your vulnerability scanners (['192.0.2.16/28'])",
    "address_sweep": "sources: a monitoring server that pings or polls every host",
    "beacon": "sources: a monitoring server polling hosts on a schedule (['10.0.5.10'])",
    "brute_force": "sources: a cloud mail filter relaying inbound mail, or a NAT gateway "
    "many users share; ports: [25] for inbound mail",
    "dns_tunnel": "zones: a mail server's reputation lookups (['zen.spamhaus.org', "
    "'hbl.spamhaus.org'])",
    "udp_flood": "destinations: an NVR receiving camera streams",
}


def ignore_section(registry: Mapping[str, DetectorSpec]) -> type:
    """Build the ``ignore`` section: ``all``, then one allow-list per registered detector."""
    fields: list[tuple[str, type, Any]] = [
        (
            IGNORE_ALL,
            IgnoreAllConfig,
            _f(
                IgnoreAllConfig,
                "Ignored for every detector. Prefer a detector's own list: a scanner "
                "allowed everywhere is a blind spot if it is ever abused.",
                factory=True,
            ),
        )
    ]
    for name in registry:
        if name == IGNORE_ALL:
            raise ValueError(f"detector name {name!r} collides with ignore.{IGNORE_ALL}")
        example = IGNORE_EXAMPLES.get(name)
        text = f"Ignored for {name} only." + (f" Example: {example}." if example else "")
        fields.append((name, IgnoreConfig, _f(IgnoreConfig, text, factory=True)))
    return dataclasses.make_dataclass("IgnoreSections", fields, frozen=True)


_IgnoreSections: Any = ignore_section(REGISTRY)


@dataclass(frozen=True)
class IgnoreSectionsConfig(_IgnoreSections):
    """The ``ignore`` section: ``ignore.all`` and ``ignore.<detector>``, each an IgnoreConfig."""


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Return the network an allow-list entry names (an address is a /32 or /128).

    Raise ValueError saying what is wrong: host bits set is refused rather than
    widened, since ``10.0.5.7/8`` is far more often a typo than a wish for a /8.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            "is not an IP address or network (e.g. 10.0.5.10, 10.0.5.0/24, 2001:db8::/48)"
        ) from None
    host = text.strip().split("/", 1)[0]
    raise ValueError(
        f"has host bits set; write the network ({loose}) or the address "
        f"({host}/{loose.max_prefixlen})"
    )


def normalise_zone(text: str) -> str:
    """Return a DNS zone as matched (lower case, no final dot); raise ValueError if invalid."""
    zone = text.strip().lower().rstrip(".")
    if zone.startswith("*."):
        raise ValueError("must not start with '*.': a zone already covers every name under it")
    labels = zone.split(".")
    if (
        not zone
        or len(zone) > 253
        or not all(0 < len(x) <= 63 and x.isascii() for x in labels)
        or not all(c.isalnum() or c in "-_" for x in labels for c in x)
    ):
        raise ValueError(
            "is not a DNS zone (dot-separated labels of letters, digits, '-' and '_', "
            "e.g. zen.spamhaus.org)"
        )
    return zone


@dataclass(frozen=True)
class Config:
    capture: CaptureConfig = _f(CaptureConfig, "Where captures come from.", factory=True)
    processing: ProcessingConfig = _f(ProcessingConfig, "How files are processed.", factory=True)
    flows: FlowsConfig = _f(FlowsConfig, "Flow building.", factory=True)
    windows: WindowsConfig = _f(WindowsConfig, "Time windows.", factory=True)
    output: OutputConfig = _f(OutputConfig, "Outputs.", factory=True)
    state: StateConfig = _f(StateConfig, "Durable state.", factory=True)
    health: HealthConfig = _f(HealthConfig, "Health thresholds.", factory=True)
    detectors: DetectorsConfig = _f(DetectorsConfig, "Explainable detectors.", factory=True)
    models: ModelsConfig = _f(ModelsConfig, "scikit-learn models.", factory=True)
    ignore: IgnoreSectionsConfig = _f(
        IgnoreSectionsConfig,
        "Allow-lists (reloadable): a finding matching an entry is suppressed: counted in "
        "netmon_detections_suppressed_total and listed apart in its window report, never "
        "alerted. Flows and traffic metrics are untouched.",
        factory=True,
    )
    llm: LLMConfig = _f(LLMConfig, "Window summaries.", factory=True)
    alertmanager: AlertmanagerConfig = _f(AlertmanagerConfig, "Detection alerts.", factory=True)
    alerting: AlertingConfig = _f(
        AlertingConfig,
        "What becomes an alert: incidents, caps, replayed windows, labels.",
        factory=True,
    )


# --------------------------------------------------------------------------- decoding

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a path",
}


_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = ECHO_CHARS


def _clip(text: str, limit: int = ECHO_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(v: Any) -> str:
    """Show a value in an error message, bounded: never expand a large value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    if isinstance(v, int | float):
        return _clip(_REPR.repr(v))
    return _clip(_REPR.repr(v) if not isinstance(v, str) else repr(v[: ECHO_CHARS + 1]))


def _show_path(p: Path | str, limit: int = 160) -> str:
    """Show a path in an error message: as is when short and printable, else a clipped repr."""
    text = str(p)
    if len(text) <= limit and text.isprintable():
        return text
    return _clip(repr(text[: limit + 1]), limit)


def _key_part(key: Any) -> str:
    """One component of a key path (``capture``, ``[3]``); odd keys are shown as a clipped repr."""
    if isinstance(key, str) and key.isprintable() and len(key) <= 40 and key:
        return key
    return _clip(repr(key[:41]) if isinstance(key, str) else _fmt(key), 40)


def _is_text(value: str, path: str, errors: list[str]) -> bool:
    # YAML's "\ud800" escapes make lone surrogates, which cannot be logged, printed or
    # used in a file name.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        errors.append(f"{path}: {_fmt(value)} is not valid text (a lone \\u surrogate escape)")
        return False
    return True


def _decode_scalar(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        errors.append(f"{path}: {_fmt(value)} is not a boolean (use true or false)")
        return None
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        errors.append(f"{path}: {_fmt(value)} is not an integer")
        return None
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isnan(number) or math.isinf(number):
                errors.append(f"{path}: {_fmt(value)} is not a finite number")
                return None
            return number
        errors.append(f"{path}: {_fmt(value)} is not a number")
        return None
    if tp is str:
        if isinstance(value, str):
            return value if _is_text(value, path, errors) else None
        errors.append(f"{path}: {_fmt(value)} is not a string")
        return None
    if tp is Path:
        if isinstance(value, str) and value.strip():
            if "\x00" in value:
                errors.append(f"{path}: contains a NUL byte")
                return None
            return Path(value) if _is_text(value, path, errors) else None
        errors.append(f"{path}: {_fmt(value)} is not a path")
        return None
    raise TypeError(f"unsupported config type {tp!r}")


def _check_range(value: Any, meta: Mapping[str, Any], path: str, errors: list[str]) -> None:
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if lo is not None and value < lo:
            errors.append(f"{path}: {_fmt(value)} is below the minimum {_fmt(lo)}")
        elif hi is not None and value > hi:
            errors.append(f"{path}: {_fmt(value)} is above the maximum {_fmt(hi)}")
    if choices is not None and value not in choices:
        errors.append(f"{path}: {_fmt(value)} is not one of {', '.join(choices)}")


def _decode(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
        return cls()
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{_key_part(key)}" if path else _key_part(key)
            errors.append(f"{where}: unknown key (allowed: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        sub = f"{path}.{f.name}" if path else f.name
        tp = hints[f.name]
        value = data[f.name]
        if is_section(tp):
            kwargs[f.name] = _decode(tp, value, sub, errors)
            continue
        origin = typing.get_origin(tp)
        if origin is tuple:
            (item_tp, _) = typing.get_args(tp)
            if value is None:
                value = []
            if not isinstance(value, list):
                errors.append(f"{sub}: expected a list, got {_fmt(value)}")
                continue
            items = []
            before = len(errors)
            for i, item in enumerate(value):
                decoded = _decode_scalar(item_tp, item, f"{sub}[{i}]", errors)
                if decoded is not None and item_tp is int:
                    _check_range(decoded, {"min": 0, "max": 65535}, f"{sub}[{i}]", errors)
                items.append(decoded)
            if len(errors) == before:
                kwargs[f.name] = tuple(items)
            continue
        if origin in (types.UnionType, typing.Union):
            raise TypeError("optional config fields are not supported")
        if value is None:
            errors.append(f"{sub}: must not be empty")
            continue
        decoded = _decode_scalar(tp, value, sub, errors)
        if decoded is None:
            continue
        _check_range(decoded, f.metadata, sub, errors)
        kwargs[f.name] = decoded
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        errors.append(f"{path or '<root>'}: {exc}")
        return cls()


def _resolve_paths(cfg: Config, base: Path) -> Config:
    """Make relative paths relative to the config file's directory."""

    def rel(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    return dataclasses.replace(
        cfg,
        capture=dataclasses.replace(
            cfg.capture,
            directory=rel(cfg.capture.directory),
            done_directory=rel(cfg.capture.done_directory),
        ),
        output=dataclasses.replace(cfg.output, directory=rel(cfg.output.directory)),
        state=dataclasses.replace(cfg.state, directory=rel(cfg.state.directory)),
    )


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        return False


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except (OSError, ValueError):
        return False


def _semantic_checks(cfg: Config, errors: list[str]) -> None:
    import re

    c = cfg.capture
    # A missing capture directory is refused, not created: it belongs to the capture tool
    # (its owner and permissions are the tool's), and a typo would otherwise be "fixed"
    # into an empty directory watched forever while captures pile up elsewhere.
    if not _is_dir(c.directory):
        errors.append(
            f"capture.directory: {_show_path(c.directory)} does not exist or is not a directory "
            "(create it or point to the directory your capture tool writes to)"
        )
    elif not os.access(c.directory, os.R_OK | os.X_OK):
        errors.append(f"capture.directory: {_show_path(c.directory)} is not readable")
    if not c.patterns:
        errors.append("capture.patterns: must list at least one pattern")
    for i, p in enumerate(c.patterns):
        if "/" in p or p.startswith(".."):
            errors.append(
                f"capture.patterns[{i}]: {_fmt(p)} must be a file name pattern, not a path"
            )
    try:
        if "source" not in re.compile(c.source_pattern).groupindex:
            errors.append("capture.source_pattern: needs a named group (?P<source>...)")
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        errors.append(f"capture.source_pattern: invalid regular expression ({_clip(str(exc))})")
    if c.shard_index >= c.shard_count:
        errors.append(
            f"capture.shard_index: {c.shard_index} must be below capture.shard_count "
            f"({c.shard_count})"
        )
    if c.after_processing == "move" and _same_path(c.done_directory, c.directory):
        errors.append("capture.done_directory: must differ from capture.directory")
    for name, target in (
        ("output.directory", cfg.output.directory),
        ("state.directory", cfg.state.directory),
    ):
        existing: Path = target
        while not _exists(existing) and existing.parent != existing:
            existing = existing.parent
        if _exists(existing) and not _is_dir(existing):
            errors.append(f"{name}: {_show_path(existing)} exists and is not a directory")
        elif not os.access(existing, os.W_OK | os.X_OK):
            errors.append(f"{name}: {_show_path(existing)} is not writable")
    if cfg.flows.active_timeout_seconds < cfg.flows.idle_timeout_seconds:
        errors.append(
            f"flows.active_timeout_seconds: {_fmt(cfg.flows.active_timeout_seconds)} "
            f"must not be below flows.idle_timeout_seconds "
            f"({_fmt(cfg.flows.idle_timeout_seconds)})"
        )
    # URLs with credentials never get here (see _check_urls), so echoing them is safe.
    for i, url in enumerate(cfg.alertmanager.urls):
        if not url.startswith(("http://", "https://")):
            errors.append(
                f"alertmanager.urls[{i}]: {_fmt(url)} must start with http:// or https://"
            )
    if cfg.llm.enabled and not cfg.llm.url.startswith(("http://", "https://")):
        errors.append(f"llm.url: {_fmt(cfg.llm.url)} must start with http:// or https://")
    for key in ("anomaly_path", "classifier_path"):
        value = getattr(cfg.models, key)
        if value and "\x00" in value:
            errors.append(f"models.{key}: contains a NUL byte")


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError, ValueError):
        return a == b


# Where a URL setting's credentials belong instead (key path without the list index).
_CREDENTIAL_HINTS = {
    "llm.url": "put the API key in the environment variable named by llm.api_key_env "
    "(it is sent as a Bearer token and never logged)",
    "alertmanager.urls": "netmon-exporter has no setting for Alertmanager credentials; "
    "reach Alertmanager without them (e.g. on localhost or a private network) or "
    "through a proxy that adds them",
}


def _has_credentials(url: str) -> bool:
    """Whether a URL carries a user name or password (``scheme://user:pass@host``).

    Any ``@`` before the path counts, also in URLs too malformed for a strict parser, so a
    password is never accepted (or echoed) because the URL around it is odd.
    """
    rest = url.split("://", 1)[-1]
    authority = rest
    for sep in "/?#":
        authority = authority.split(sep, 1)[0]
    return "@" in authority


def _url_settings(section: Any, path: str = "") -> typing.Iterator[tuple[str, str, str]]:
    """Yield (key path, hint key, URL) for every URL setting (named url, urls, *_url, *_urls)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value):
            yield from _url_settings(value, sub)
        elif f.name in ("url", "urls") or f.name.endswith(("_url", "_urls")):
            if isinstance(value, str):
                yield sub, sub, value
            elif isinstance(value, tuple):
                for i, item in enumerate(value):
                    if isinstance(item, str):
                        yield f"{sub}[{i}]", sub, item


def _check_urls(cfg: Config, errors: list[str]) -> None:
    """Refuse credentials in URLs: they would be sent as basic auth and end up in logs."""
    for where, hint_key, url in _url_settings(cfg):
        if _has_credentials(url):
            hint = _CREDENTIAL_HINTS.get(hint_key, "credentials in URLs are not supported")
            errors.append(f"{where}: must not contain a user name or password (user:pass@); {hint}")
        else:
            try:
                urllib.parse.urlsplit(url).port  # noqa: B018 - raises on a malformed port or IPv6
            except ValueError as exc:
                errors.append(f"{where}: {_fmt(url)} is not a valid URL ({_clip(str(exc))})")


def _check_alerting(cfg: Config, errors: list[str]) -> None:
    """Check the allow-lists and the alert identity settings."""
    for scope in dataclasses.fields(cfg.ignore):
        lists: IgnoreConfig = getattr(cfg.ignore, scope.name)
        where = f"ignore.{scope.name}"
        for key in ("sources", "destinations"):
            for i, text in enumerate(getattr(lists, key)):
                try:
                    parse_network(text)
                except ValueError as exc:
                    errors.append(f"{where}.{key}[{i}]: {_fmt(text)} {exc}")
        for i, port in enumerate(lists.ports):
            if port == 0:
                errors.append(f"{where}.ports[{i}]: 0 is not a port (1-65535)")
        for i, text in enumerate(lists.zones):
            try:
                normalise_zone(text)
            except ValueError as exc:
                errors.append(f"{where}.zones[{i}]: {_fmt(text)} {exc}")
    a = cfg.alerting
    if len(a.sensor) > 128 or not a.sensor.isprintable():
        errors.append(
            f"alerting.sensor: {_fmt(a.sensor)} must be printable text of at most 128 characters"
        )
    if a.generator_url:
        if not a.generator_url.startswith(("http://", "https://")):
            errors.append(
                f"alerting.generator_url: {_fmt(a.generator_url)} must start with "
                "http:// or https://"
            )
        try:
            names = [n for _, n, _, _ in string.Formatter().parse(a.generator_url) if n is not None]
        except ValueError:
            errors.append(
                "alerting.generator_url: unbalanced '{' or '}' (write {{ and }} for literal braces)"
            )
            names = []
        for name in names:
            if name not in GENERATOR_URL_FIELDS:
                known = ", ".join("{" + f + "}" for f in GENERATOR_URL_FIELDS)
                errors.append(
                    f"alerting.generator_url: unknown placeholder {{{_clip(name, 40)}}} "
                    f"(known: {known})"
                )


# --------------------------------------------------------------------------- YAML


class _Abort(Exception):
    """Stop composing: the document is too deeply nested to go on."""


def _path_part(index: Any) -> str:
    if isinstance(index, int):
        return f"[{index}]"
    if isinstance(index, ScalarNode):
        return _key_part(index.value)
    return "<key>"


def _join(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out += part if part.startswith("[") or not out else "." + part
    return _clip(out, 160) or "<root>"


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader for config files: no anchors or aliases, bounded nesting.

    Aliases are what make a "billion laughs" file expand exponentially, and a config has
    no use for them. Each line holding anchors or aliases is reported once, with the key
    path of the first, so the user sees all of them at once; composing goes on with a
    null in place of each alias. Nesting deeper than :data:`MAX_NESTING` stops composing
    (the composer recurses once per level).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._parts: list[str] = []
        self._by_line: dict[int, tuple[str, set[str]]] = {}  # line -> (first path, kinds)
        self._too_deep: list[str] = []

    @property
    def problems(self) -> list[str]:
        out = []
        for line, (where, kinds) in self._by_line.items():
            if kinds == {"alias"}:
                what = "YAML aliases (*name) are not supported; write the value out"
            elif kinds == {"anchor"}:
                what = "YAML anchors (&name) are not supported"
            else:
                what = (
                    "YAML anchors (&name) and aliases (*name) are not supported; "
                    "write the value out"
                )
            out.append(f"{where}: {what} (line {line})")
        return out + self._too_deep

    def _note(self, kind: str, mark: Any) -> None:
        where, kinds = self._by_line.setdefault(mark.line + 1, (_join(self._parts), set()))
        kinds.add(kind)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if parent is not None:
            self._parts.append(_path_part(index))
        try:
            if len(self._parts) > MAX_NESTING:
                line = self.peek_event().start_mark.line + 1
                self._too_deep.append(
                    f"{_join(self._parts)}: nested deeper than {MAX_NESTING} levels (line {line})"
                )
                raise _Abort
            if self.check_event(AliasEvent):
                event = self.get_event()
                self._note("alias", event.start_mark)
                return ScalarNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)
            event = self.peek_event()
            if getattr(event, "anchor", None) is not None:
                self._note("anchor", event.start_mark)
                event.anchor = None  # never registered, so never aliased
            return super().compose_node(parent, index)
        finally:
            if parent is not None:
                self._parts.pop()

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        # Explicit tags reach constructors that raise plain exceptions on bad text
        # (``!!int abc``, ``!!bool maybe``, ``!!timestamp x``): report them as YAML errors.
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
            shown = f" {_fmt(node.value)}" if isinstance(node, ScalarNode) else ""
            tag = _clip(str(node.tag).replace("tag:yaml.org,2002:", "!!"), 60)
            raise ConstructorError(
                None, None, f"cannot read{shown} as {tag}", node.start_mark
            ) from None


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(node: Node, parts: list[str], duplicates: list[str], numbers: list[str]) -> None:
    """Find duplicate keys and overlong numbers, with key paths, before anything is built."""
    if isinstance(node, ScalarNode):
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            numbers.append(
                f"{_join(parts)}: number with {len(node.value)} characters is too long "
                f"(at most {MAX_NUMBER_CHARS}; line {node.start_mark.line + 1})"
            )
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _check_nodes(item, [*parts, f"[{i}]"], duplicates, numbers)
    elif isinstance(node, MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            sub = [*parts, _path_part(key)]
            _check_nodes(key, sub, duplicates, numbers)
            if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                ident = (key.tag, key.value)
                line = key.start_mark.line + 1
                if ident in first_line:
                    duplicates.append(
                        f"{_join(sub)}: duplicate key (line {line}; first on line "
                        f"{first_line[ident]})"
                    )
                else:
                    first_line[ident] = line
            _check_nodes(value, sub, duplicates, numbers)


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = " ".join((getattr(exc, "problem", None) or str(exc)).split())  # one line
    return f"<root>: invalid YAML{where}: {_clip(problem, 200)}"


def _capped(errors: list[str]) -> list[str]:
    if len(errors) <= MAX_ERRORS:
        return errors
    return [*errors[:MAX_ERRORS], f"<root>: {len(errors) - MAX_ERRORS} more errors not shown"]


def _load_yaml(text: str, source: str) -> tuple[Any, list[str]]:
    """Parse config YAML into plain data within the bounds above.

    Return the data and the duplicate-key errors (the document is still decoded, last key
    winning, so those are reported together with every decoding error); raise
    :class:`ConfigError` for anything that stops decoding.
    """
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "surrogatepass")) > (
        MAX_CONFIG_BYTES
    ):
        raise ConfigError([f"<root>: the configuration {_too_large()}"], source)
    try:
        loader = _ConfigLoader(text)  # the reader refuses control characters here
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_error(exc)], source) from None
    try:
        try:
            node = loader.get_single_node()
        except _Abort:
            raise ConfigError(_capped(loader.problems), source) from None
        except yaml.YAMLError as exc:
            raise ConfigError(_capped([*loader.problems, _yaml_error(exc)]), source) from None
        if node is None:  # an empty document: every default
            return None, []
        duplicates: list[str] = []
        numbers: list[str] = []
        _check_nodes(node, [], duplicates, numbers)
        if loader.problems or numbers:
            raise ConfigError(_capped([*loader.problems, *duplicates, *numbers]), source)
        try:
            return loader.construct_document(node), duplicates
        except yaml.YAMLError as exc:
            raise ConfigError(_capped([*duplicates, _yaml_error(exc)]), source) from None
    finally:
        loader.dispose()


def _too_large() -> str:
    return (
        f"is larger than {MAX_CONFIG_BYTES // 1024} KiB, the most a config file may be "
        "(is this the right file?)"
    )


def parse_config(
    text: str, *, base_dir: Path | None = None, source: str = "", check_paths: bool = True
) -> Config:
    """Decode and validate YAML text; raise :class:`ConfigError` listing every problem."""
    data, errors = _load_yaml(text, source)
    cfg = _decode(Config, data, "", errors)
    _check_urls(cfg, errors)
    _check_alerting(cfg, errors)
    if errors:
        raise ConfigError(_capped(errors), source)
    cfg = _resolve_paths(cfg, base_dir or Path.cwd())
    if check_paths:
        _semantic_checks(cfg, errors)
    if errors:
        raise ConfigError(_capped(errors), source)
    return cfg


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def read_config_file(path: str | os.PathLike[str]) -> bytes:
    """Read a config file, at most :data:`MAX_CONFIG_BYTES`; raise ConfigError otherwise.

    Only regular files are read: a config symlinked to ``/dev/zero`` or a named pipe would
    otherwise be read forever (or block forever on open).
    """
    p = Path(path)
    shown = _show_path(p)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError([f"<file>: {shown} does not exist"], str(p)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError([f"<file>: cannot read {shown}: {_clip(str(exc))}"], str(p)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "not a regular file")
            target = f" (a link to {_show_path(os.path.realpath(p))})" if p.is_symlink() else ""
            raise ConfigError([f"<file>: {shown}{target} is {kind}, not a regular file"], str(p))
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError([f"<file>: {shown} {_too_large()}"], str(p))
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError([f"<file>: cannot read {shown}: {_clip(str(exc))}"], str(p)) from None
    finally:
        os.close(fd)


def load_config(path: str | os.PathLike[str], *, check_paths: bool = True) -> Config:
    """Read and validate a config file; relative paths in it are relative to its directory."""
    p = Path(path)
    raw = read_config_file(p)
    text = _utf8(raw, p)
    return parse_config(text, base_dir=p.resolve().parent, source=str(p), check_paths=check_paths)


def _utf8(raw: bytes, p: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"<file>: {_show_path(p)} is not UTF-8 text (byte {exc.start})"], str(p)
        ) from None


def read_yaml_file(path: str | os.PathLike[str]) -> Any:
    """Read another YAML file of ours (the web config) within the same bounds as config.yaml.

    Regular files up to the size limit, no anchors or aliases, no duplicate keys, bounded
    nesting and numbers; raise :class:`ConfigError` listing every problem.
    """
    p = Path(path)
    data, duplicates = _load_yaml(_utf8(read_config_file(p), p), str(p))
    if duplicates:
        raise ConfigError(duplicates, str(p))
    return data


def restart_required_changes(old: Config, new: Config) -> list[str]:
    """List key paths that changed but only take effect after a restart."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        for f in dataclasses.fields(a):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            sub = f"{path}.{f.name}" if path else f.name
            if dataclasses.is_dataclass(va):
                walk(va, vb, sub)
            elif va != vb and f.metadata.get("restart"):
                out.append(sub)

    walk(old, new, "")
    return out


def is_section(tp: Any) -> bool:
    """Whether a field type is a nested config section (a dataclass type)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def field_default(f: dataclasses.Field[Any]) -> Any:
    """Return a field's default value (calling its factory if it has one)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    factory: Any = f.default_factory
    return factory()


def iter_settings(cls: type = Config, path: str = "") -> typing.Iterator[tuple[str, Any, dict]]:
    """Yield (key path, default, metadata) for every leaf setting (used for docs and tests)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        sub = f"{path}.{f.name}" if path else f.name
        tp = hints[f.name]
        if is_section(tp):
            yield from iter_settings(tp, sub)
        else:
            yield sub, field_default(f), dict(f.metadata)
