"""The flow record: the one data shape every stage after the flow engine consumes.

A batch of flows is a :class:`FlowBatch`: a dict of equal-length numpy columns.
Key columns have fixed internal names and dtypes; feature columns use the
CICFlowMeter (Java, "CICFlowMeter-V4" short header) CSV names and are float64,
with NaN meaning "missing in the source" (e.g. a flow CSV that lacks the column).

Addresses are 16-byte ``V16`` values (network order; IPv4 as IPv4-mapped IPv6,
``::ffff:a.b.c.d``) so that grouping with ``np.unique``/``argsort`` is fast and
exact. Use :func:`addrs_to_str` / :func:`str_to_addrs` at the edges only.

Units follow CICFlowMeter for compatibility: durations and inter-arrival times
in **microseconds**, rates per second, lengths in bytes.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

ADDR_DTYPE = np.dtype("V16")
_V4_PREFIX = b"\x00" * 10 + b"\xff\xff"

# Key / identity columns (internal names, fixed dtypes).
KEY_COLUMNS: dict[str, np.dtype] = {
    "src_ip": ADDR_DTYPE,  # client: sender of the first packet seen
    "dst_ip": ADDR_DTYPE,
    "src_port": np.dtype(np.uint16),  # 0 for protocols without ports
    "dst_port": np.dtype(np.uint16),  # ICMP: (type << 8 | code) of the first packet
    "protocol": np.dtype(np.uint8),  # IANA protocol number (6, 17, 1, 58, ...)
    "first_ts": np.dtype(np.float64),  # epoch seconds of the first packet
    "last_ts": np.dtype(np.float64),  # epoch seconds of the last packet
}

# CICFlowMeter (Java) feature columns, in CSV order, without the identity
# columns (Flow ID, Src IP, Src Port, Dst IP, Dst Port, Protocol, Timestamp)
# and without Label. All float64.
CIC_FEATURES: tuple[str, ...] = (
    "Flow Duration",
    "Tot Fwd Pkts",
    "Tot Bwd Pkts",
    "TotLen Fwd Pkts",
    "TotLen Bwd Pkts",
    "Fwd Pkt Len Max",
    "Fwd Pkt Len Min",
    "Fwd Pkt Len Mean",
    "Fwd Pkt Len Std",
    "Bwd Pkt Len Max",
    "Bwd Pkt Len Min",
    "Bwd Pkt Len Mean",
    "Bwd Pkt Len Std",
    "Flow Byts/s",
    "Flow Pkts/s",
    "Flow IAT Mean",
    "Flow IAT Std",
    "Flow IAT Max",
    "Flow IAT Min",
    "Fwd IAT Tot",
    "Fwd IAT Mean",
    "Fwd IAT Std",
    "Fwd IAT Max",
    "Fwd IAT Min",
    "Bwd IAT Tot",
    "Bwd IAT Mean",
    "Bwd IAT Std",
    "Bwd IAT Max",
    "Bwd IAT Min",
    "Fwd PSH Flags",
    "Bwd PSH Flags",
    "Fwd URG Flags",
    "Bwd URG Flags",
    "Fwd Header Len",
    "Bwd Header Len",
    "Fwd Pkts/s",
    "Bwd Pkts/s",
    "Pkt Len Min",
    "Pkt Len Max",
    "Pkt Len Mean",
    "Pkt Len Std",
    "Pkt Len Var",
    "FIN Flag Cnt",
    "SYN Flag Cnt",
    "RST Flag Cnt",
    "PSH Flag Cnt",
    "ACK Flag Cnt",
    "URG Flag Cnt",
    "CWE Flag Count",
    "ECE Flag Cnt",
    "Down/Up Ratio",
    "Pkt Size Avg",
    "Fwd Seg Size Avg",
    "Bwd Seg Size Avg",
    "Fwd Byts/b Avg",
    "Fwd Pkts/b Avg",
    "Fwd Blk Rate Avg",
    "Bwd Byts/b Avg",
    "Bwd Pkts/b Avg",
    "Bwd Blk Rate Avg",
    "Subflow Fwd Pkts",
    "Subflow Fwd Byts",
    "Subflow Bwd Pkts",
    "Subflow Bwd Byts",
    "Init Fwd Win Byts",
    "Init Bwd Win Byts",
    "Fwd Act Data Pkts",
    "Fwd Seg Size Min",
    "Active Mean",
    "Active Std",
    "Active Max",
    "Active Min",
    "Idle Mean",
    "Idle Std",
    "Idle Max",
    "Idle Min",
)

# Extra per-flow columns that detection needs and CICFlowMeter lacks. float64,
# NaN when unknown (e.g. from a flow CSV).
EXTRA_FEATURES: tuple[str, ...] = (
    "fwd_syn_cnt",
    "bwd_syn_cnt",
    "fwd_fin_cnt",
    "bwd_fin_cnt",
    "fwd_rst_cnt",
    "bwd_rst_cnt",
    "icmp_type",
    "icmp_code",
    # DNS (flows to/from port 53 or 5353); NaN for non-DNS flows.
    "dns_queries",  # number of DNS queries (QR=0 messages) seen
    "dns_qname_len",  # length of the (first) query name, bytes
    "dns_qname_labels",  # number of labels in it
    "dns_qname_entropy",  # Shannon entropy (bits/char) of the name's characters
    "dns_nxdomain",  # number of responses with RCODE 3
)

# Object columns (Python str) that some flows carry; "" when absent.
STRING_COLUMNS: tuple[str, ...] = (
    "dns_qname",  # the first query name, lower-case, no trailing dot
    "label",  # ground-truth label from a labelled flow CSV, "" otherwise
)

FEATURE_COLUMNS: tuple[str, ...] = CIC_FEATURES + EXTRA_FEATURES


@dataclass(frozen=True)
class FlowBatch:
    """A batch of flows as equal-length columns (see module docstring)."""

    columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        for col in self.columns.values():
            return int(len(col))
        return 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def take(self, index: np.ndarray) -> FlowBatch:
        """Return the rows selected by a boolean mask or an index array."""
        return FlowBatch({k: v[index] for k, v in self.columns.items()})

    @staticmethod
    def empty() -> FlowBatch:
        return make_batch(0)

    @staticmethod
    def concat(batches: Sequence[FlowBatch]) -> FlowBatch:
        """Concatenate batches; columns missing from some batches are filled as missing."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return FlowBatch.empty()
        if len(batches) == 1:
            return batches[0]
        names: list[str] = []
        for b in batches:
            for k in b.columns:
                if k not in names:
                    names.append(k)
        out: dict[str, np.ndarray] = {}
        for k in names:
            parts = []
            for b in batches:
                if k in b.columns:
                    parts.append(b.columns[k])
                else:
                    parts.append(_missing_column(k, len(b)))
            out[k] = np.concatenate(parts)
        return FlowBatch(out)


def _missing_column(name: str, n: int) -> np.ndarray:
    if name in KEY_COLUMNS:
        return np.zeros(n, dtype=KEY_COLUMNS[name])
    if name in STRING_COLUMNS:
        return np.full(n, "", dtype=object)
    return np.full(n, np.nan, dtype=np.float64)


def make_batch(n: int, **columns: np.ndarray | Iterable[object]) -> FlowBatch:
    """Build a complete batch of ``n`` flows; columns not given are missing (NaN/0/"")."""
    out: dict[str, np.ndarray] = {}
    for name in (*KEY_COLUMNS, *FEATURE_COLUMNS, *STRING_COLUMNS):
        out[name] = _missing_column(name, n)
    for name, values in columns.items():
        if name in KEY_COLUMNS:
            arr = np.asarray(values, dtype=KEY_COLUMNS[name])
        elif name in STRING_COLUMNS:
            arr = np.asarray(
                list(values) if not isinstance(values, np.ndarray) else values, dtype=object
            )
        else:
            arr = np.asarray(values, dtype=np.float64)
        if arr.shape != (n,):
            raise ValueError(f"column {name!r} has shape {arr.shape}, expected ({n},)")
        out[name] = arr
    return FlowBatch(out)


def str_to_addrs(values: Iterable[str]) -> np.ndarray:
    """Convert textual IPv4/IPv6 addresses to ``V16`` (invalid ones become all-zero)."""
    raw = bytearray()
    cache: dict[str, bytes] = {}
    for v in values:
        s = str(v).strip()
        b = cache.get(s)
        if b is None:
            b = cache[s] = _pack_addr(s)
        raw += b
    return np.frombuffer(bytes(raw), dtype=ADDR_DTYPE).copy()


def _pack_addr(s: str) -> bytes:
    try:
        return _V4_PREFIX + socket.inet_pton(socket.AF_INET, s)
    except OSError:
        pass
    try:
        ip = ipaddress.ip_address(s)  # IPv6, including scoped and mapped forms
    except ValueError:
        return bytes(16)
    return (_V4_PREFIX + ip.packed) if ip.version == 4 else ip.packed


def addr_to_str(value: np.void | bytes) -> str:
    """Format one ``V16`` address (IPv4-mapped shown as dotted quad)."""
    b = value.tobytes() if isinstance(value, np.void) else bytes(value)
    if b[:12] == _V4_PREFIX:
        return str(ipaddress.IPv4Address(b[12:]))
    return str(ipaddress.IPv6Address(b))


def addrs_to_str(values: np.ndarray) -> list[str]:
    """Format an array of ``V16`` addresses (vectorised for IPv4)."""
    if len(values) == 0:
        return []
    raw = np.frombuffer(values.tobytes(), dtype=np.uint8).reshape(-1, 16)
    is_v4 = (raw[:, :12] == np.frombuffer(_V4_PREFIX, dtype=np.uint8)).all(axis=1)
    out: list[str] = [""] * len(values)
    if is_v4.any():
        q = raw[is_v4, 12:].astype(np.uint32)
        strs = np.char.add(
            np.char.add(
                np.char.add(
                    np.char.add(
                        np.char.add(np.char.add(q[:, 0].astype(str), "."), q[:, 1].astype(str)), "."
                    ),
                    q[:, 2].astype(str),
                ),
                ".",
            ),
            q[:, 3].astype(str),
        )
        for i, s in zip(np.flatnonzero(is_v4), strs.tolist(), strict=True):
            out[i] = s
    for i in np.flatnonzero(~is_v4):
        out[i] = str(ipaddress.IPv6Address(raw[i].tobytes()))
    return out


# Column-name tables for flow CSVs ------------------------------------------------------
# Identity columns of CICFlowMeter's CSV, in its order (Java short names).
CIC_ID_COLUMNS: tuple[str, ...] = (
    "Flow ID",
    "Src IP",
    "Src Port",
    "Dst IP",
    "Dst Port",
    "Protocol",
    "Timestamp",
)
# The Java tool's 84 CSV columns (CICFlowMeter-V4 short header).
CIC_CSV_COLUMNS: tuple[str, ...] = (*CIC_ID_COLUMNS, *CIC_FEATURES, "Label")

# Java long header (CIC-IDS2017 CSVs, "MachineLearningCVE"), short -> long.
CIC_LONG_NAMES: dict[str, str] = dict(
    zip(
        (*CIC_ID_COLUMNS, *CIC_FEATURES, "Label"),
        (
            "Flow ID",
            "Source IP",
            "Source Port",
            "Destination IP",
            "Destination Port",
            "Protocol",
            "Timestamp",
            "Flow Duration",
            "Total Fwd Packets",
            "Total Backward Packets",
            "Total Length of Fwd Packets",
            "Total Length of Bwd Packets",
            "Fwd Packet Length Max",
            "Fwd Packet Length Min",
            "Fwd Packet Length Mean",
            "Fwd Packet Length Std",
            "Bwd Packet Length Max",
            "Bwd Packet Length Min",
            "Bwd Packet Length Mean",
            "Bwd Packet Length Std",
            "Flow Bytes/s",
            "Flow Packets/s",
            "Flow IAT Mean",
            "Flow IAT Std",
            "Flow IAT Max",
            "Flow IAT Min",
            "Fwd IAT Total",
            "Fwd IAT Mean",
            "Fwd IAT Std",
            "Fwd IAT Max",
            "Fwd IAT Min",
            "Bwd IAT Total",
            "Bwd IAT Mean",
            "Bwd IAT Std",
            "Bwd IAT Max",
            "Bwd IAT Min",
            "Fwd PSH Flags",
            "Bwd PSH Flags",
            "Fwd URG Flags",
            "Bwd URG Flags",
            "Fwd Header Length",
            "Bwd Header Length",
            "Fwd Packets/s",
            "Bwd Packets/s",
            "Min Packet Length",
            "Max Packet Length",
            "Packet Length Mean",
            "Packet Length Std",
            "Packet Length Variance",
            "FIN Flag Count",
            "SYN Flag Count",
            "RST Flag Count",
            "PSH Flag Count",
            "ACK Flag Count",
            "URG Flag Count",
            "CWE Flag Count",
            "ECE Flag Count",
            "Down/Up Ratio",
            "Average Packet Size",
            "Avg Fwd Segment Size",
            "Avg Bwd Segment Size",
            "Fwd Avg Bytes/Bulk",
            "Fwd Avg Packets/Bulk",
            "Fwd Avg Bulk Rate",
            "Bwd Avg Bytes/Bulk",
            "Bwd Avg Packets/Bulk",
            "Bwd Avg Bulk Rate",
            "Subflow Fwd Packets",
            "Subflow Fwd Bytes",
            "Subflow Bwd Packets",
            "Subflow Bwd Bytes",
            "Init_Win_bytes_forward",
            "Init_Win_bytes_backward",
            "act_data_pkt_fwd",
            "min_seg_size_forward",
            "Active Mean",
            "Active Std",
            "Active Max",
            "Active Min",
            "Idle Mean",
            "Idle Std",
            "Idle Max",
            "Idle Min",
            "Label",
        ),
        strict=True,
    )
)

# Python cicflowmeter (hieulw/cicflowmeter 0.2.x) snake_case names, short -> snake: its
# 82 columns are the 6 identity columns below (no Flow ID) plus the 76 features. (Older
# releases spelled the CWR column "cwe_flag_count": accepted as an alias.)
CIC_PYTHON_NAMES: dict[str, str] = dict(
    zip(
        (*CIC_ID_COLUMNS, *CIC_FEATURES),
        (
            "",
            "src_ip",
            "src_port",
            "dst_ip",
            "dst_port",
            "protocol",
            "timestamp",
            "flow_duration",
            "tot_fwd_pkts",
            "tot_bwd_pkts",
            "totlen_fwd_pkts",
            "totlen_bwd_pkts",
            "fwd_pkt_len_max",
            "fwd_pkt_len_min",
            "fwd_pkt_len_mean",
            "fwd_pkt_len_std",
            "bwd_pkt_len_max",
            "bwd_pkt_len_min",
            "bwd_pkt_len_mean",
            "bwd_pkt_len_std",
            "flow_byts_s",
            "flow_pkts_s",
            "flow_iat_mean",
            "flow_iat_std",
            "flow_iat_max",
            "flow_iat_min",
            "fwd_iat_tot",
            "fwd_iat_mean",
            "fwd_iat_std",
            "fwd_iat_max",
            "fwd_iat_min",
            "bwd_iat_tot",
            "bwd_iat_mean",
            "bwd_iat_std",
            "bwd_iat_max",
            "bwd_iat_min",
            "fwd_psh_flags",
            "bwd_psh_flags",
            "fwd_urg_flags",
            "bwd_urg_flags",
            "fwd_header_len",
            "bwd_header_len",
            "fwd_pkts_s",
            "bwd_pkts_s",
            "pkt_len_min",
            "pkt_len_max",
            "pkt_len_mean",
            "pkt_len_std",
            "pkt_len_var",
            "fin_flag_cnt",
            "syn_flag_cnt",
            "rst_flag_cnt",
            "psh_flag_cnt",
            "ack_flag_cnt",
            "urg_flag_cnt",
            "cwr_flag_count",
            "ece_flag_cnt",
            "down_up_ratio",
            "pkt_size_avg",
            "fwd_seg_size_avg",
            "bwd_seg_size_avg",
            "fwd_byts_b_avg",
            "fwd_pkts_b_avg",
            "fwd_blk_rate_avg",
            "bwd_byts_b_avg",
            "bwd_pkts_b_avg",
            "bwd_blk_rate_avg",
            "subflow_fwd_pkts",
            "subflow_fwd_byts",
            "subflow_bwd_pkts",
            "subflow_bwd_byts",
            "init_fwd_win_byts",
            "init_bwd_win_byts",
            "fwd_act_data_pkts",
            "fwd_seg_size_min",
            "active_mean",
            "active_std",
            "active_max",
            "active_min",
            "idle_mean",
            "idle_std",
            "idle_max",
            "idle_min",
        ),
        strict=True,
    )
)

# NTLFlowLyzer names for the columns it shares with CICFlowMeter, short -> NTL.
# Columns it lacks (bulk packets/rate pairs, Fwd Act Data Pkts, ...) are missing (NaN).
NTL_NAMES: dict[str, str] = {
    "Flow ID": "flow_id",
    "Src IP": "src_ip",
    "Src Port": "src_port",
    "Dst IP": "dst_ip",
    "Dst Port": "dst_port",
    "Protocol": "protocol",
    "Timestamp": "timestamp",
    "Flow Duration": "duration",
    "Flow Byts/s": "bytes_rate",
    "Flow Pkts/s": "packets_rate",
    "Fwd Pkts/s": "fwd_packets_rate",
    "Bwd Pkts/s": "bwd_packets_rate",
    "Tot Fwd Pkts": "fwd_packets_count",
    "Tot Bwd Pkts": "bwd_packets_count",
    "TotLen Fwd Pkts": "fwd_total_payload_bytes",
    "TotLen Bwd Pkts": "bwd_total_payload_bytes",
    "Fwd Pkt Len Max": "fwd_payload_bytes_max",
    "Fwd Pkt Len Min": "fwd_payload_bytes_min",
    "Fwd Pkt Len Mean": "fwd_payload_bytes_mean",
    "Fwd Pkt Len Std": "fwd_payload_bytes_std",
    "Bwd Pkt Len Max": "bwd_payload_bytes_max",
    "Bwd Pkt Len Min": "bwd_payload_bytes_min",
    "Bwd Pkt Len Mean": "bwd_payload_bytes_mean",
    "Bwd Pkt Len Std": "bwd_payload_bytes_std",
    "Pkt Len Max": "payload_bytes_max",
    "Pkt Len Min": "payload_bytes_min",
    "Pkt Len Mean": "payload_bytes_mean",
    "Pkt Len Std": "payload_bytes_std",
    "Pkt Len Var": "payload_bytes_variance",
    "Fwd Header Len": "fwd_total_header_bytes",
    "Bwd Header Len": "bwd_total_header_bytes",
    "Fwd Seg Size Min": "fwd_segment_size_min",
    "Flow IAT Mean": "packets_IAT_mean",
    "Flow IAT Max": "packet_IAT_max",
    "Flow IAT Min": "packet_IAT_min",
    "Flow IAT Std": "packet_IAT_std",
    "Fwd IAT Tot": "fwd_packets_IAT_total",
    "Fwd IAT Max": "fwd_packets_IAT_max",
    "Fwd IAT Min": "fwd_packets_IAT_min",
    "Fwd IAT Mean": "fwd_packets_IAT_mean",
    "Fwd IAT Std": "fwd_packets_IAT_std",
    "Bwd IAT Tot": "bwd_packets_IAT_total",
    "Bwd IAT Max": "bwd_packets_IAT_max",
    "Bwd IAT Min": "bwd_packets_IAT_min",
    "Bwd IAT Mean": "bwd_packets_IAT_mean",
    "Bwd IAT Std": "bwd_packets_IAT_std",
    "Fwd PSH Flags": "fwd_psh_flag_counts",
    "Bwd PSH Flags": "bwd_psh_flag_counts",
    "Fwd URG Flags": "fwd_urg_flag_counts",
    "Bwd URG Flags": "bwd_urg_flag_counts",
    "FIN Flag Cnt": "fin_flag_counts",
    "SYN Flag Cnt": "syn_flag_counts",
    "RST Flag Cnt": "rst_flag_counts",
    "PSH Flag Cnt": "psh_flag_counts",
    "ACK Flag Cnt": "ack_flag_counts",
    "URG Flag Cnt": "urg_flag_counts",
    "ECE Flag Cnt": "ece_flag_counts",
    "CWE Flag Count": "cwr_flag_counts",
    "Down/Up Ratio": "down_up_rate",
    "Pkt Size Avg": "payload_bytes_mean",
    "Init Fwd Win Byts": "fwd_init_win_bytes",
    "Init Bwd Win Byts": "bwd_init_win_bytes",
    "Active Max": "active_max",
    "Active Min": "active_min",
    "Active Mean": "active_mean",
    "Active Std": "active_std",
    "Idle Max": "idle_max",
    "Idle Min": "idle_min",
    "Idle Mean": "idle_mean",
    "Idle Std": "idle_std",
    "Fwd Byts/b Avg": "avg_fwd_bytes_per_bulk",
    "Fwd Pkts/b Avg": "avg_fwd_packets_per_bulk",
    "Bwd Byts/b Avg": "avg_bwd_bytes_per_bulk",
    "Fwd Blk Rate Avg": "avg_fwd_bulk_rate",
    "Bwd Blk Rate Avg": "avg_bwd_bulk_rate",
    "Fwd Seg Size Avg": "fwd_segment_size_mean",
    "Bwd Seg Size Avg": "bwd_segment_size_mean",
    "Subflow Fwd Pkts": "subflow_fwd_packets",
    "Subflow Bwd Pkts": "subflow_bwd_packets",
    "Subflow Fwd Byts": "subflow_fwd_bytes",
    "Subflow Bwd Byts": "subflow_bwd_bytes",
    "Label": "label",
}


def header_aliases() -> dict[str, str]:
    """Map every known CSV header spelling (normalised) to its Java short name."""
    out: dict[str, str] = {}
    tables = (
        {n: n for n in (*CIC_CSV_COLUMNS, *EXTRA_FEATURES, *STRING_COLUMNS)},
        CIC_LONG_NAMES,
        CIC_PYTHON_NAMES,
        NTL_NAMES,
    )
    pairs = [pair for table in tables for pair in table.items()]
    pairs += [
        ("Fwd Header Len", "Fwd Header Length.1"),
        ("CWE Flag Count", "cwe_flag_count"),
        ("CWE Flag Count", "CWR Flag Count"),
        ("Timestamp", "timestamp"),
    ]
    for short, alias in pairs:
        if alias:
            out.setdefault(normalise_header(alias), short)
    return out


def normalise_header(name: str) -> str:
    """Return a header with case, surrounding spaces and quotes ignored."""
    return name.strip().strip('"').strip().lower()
