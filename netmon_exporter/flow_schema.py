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
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    # Per-query DNS statistics (every query of the flow or slice, not only the first).
    "dns_qnames",  # distinct query names (HyperLogLog estimate, near exact below ~80)
    "dns_zones",  # distinct registered domains (last two labels) of the flow so far
    "dns_qname_len_total",  # sum of the query names' lengths, bytes
    "dns_qname_len_max",  # longest query name, bytes
    "dns_label_entropy",  # mean per query of the entropy of its labels left of the domain
    "dns_query_bytes",  # DNS payload bytes of the queries
    "dns_response_bytes",  # DNS payload bytes of the responses
    # What the record is (RECORD_*) and, for a slice, how long its flow had been going.
    "flow_record",
    "flow_age",  # seconds from the flow's first packet to this record's first packet
    # Bytes on the wire (frame lengths as captured: link, IP and transport headers and
    # payload), as netmon_bytes_total counts them; the TotLen columns count payload only.
    "fwd_wire_bytes",
    "bwd_wire_bytes",
)

# Object columns (Python str) that some flows carry; "" when absent.
STRING_COLUMNS: tuple[str, ...] = (
    "dns_qname",  # the first query name, lower-case, no trailing dot
    "label",  # ground-truth label from a labelled flow CSV, "" otherwise
)

FEATURE_COLUMNS: tuple[str, ...] = CIC_FEATURES + EXTRA_FEATURES

# What a row stands for (the ``flow_record`` column; missing means RECORD_FLOW). A flow
# still open at a window boundary is cut there into interim records, as NetFlow/IPFIX
# exporters do at an active timeout, but aligned to the windows (docs/flow-features.md):
RECORD_FLOW = 0  # a whole flow never cut: also its only slice
RECORD_SLICE = 1  # an interim record: a flow's packets within one window, the flow still open
RECORD_TAIL = 2  # the last slice of a cut flow (its packets since its last interim record)
RECORD_WHOLE = 3  # the whole of a cut flow (CICFlowMeter semantics)
FLOWS, SLICES = "flows", "slices"  # the two views of a batch (see ``view``)


def record_kinds(batch: FlowBatch) -> np.ndarray:
    """Return each row's RECORD_* (RECORD_FLOW where the column is missing)."""
    if "flow_record" not in batch:
        return np.zeros(len(batch), dtype=np.int8)
    kind = np.asarray(batch["flow_record"], dtype=np.float64)
    return np.where(np.isfinite(kind), kind, RECORD_FLOW).astype(np.int8)


def is_flow(batch: FlowBatch) -> np.ndarray:
    """Rows that stand for a whole flow (counted once each, CICFlowMeter semantics)."""
    kind = record_kinds(batch)
    return (kind == RECORD_FLOW) | (kind == RECORD_WHOLE)


def is_first(batch: FlowBatch) -> np.ndarray:
    """Rows that are a flow's first record: where the flow is counted as it begins.

    A flow never cut (``RECORD_FLOW``), or the first slice of a cut flow (a
    ``RECORD_SLICE`` whose ``flow_age`` is 0: it starts with the flow's first packet).
    Its first slice is handed out at the first window boundary the flow crosses, so a
    long or idle flow is counted in the window where it began while that window is
    still open, not when the flow ends minutes later. Without ``flow_age`` (rows from
    elsewhere) the whole-flow records count instead, as :func:`is_flow`.
    """
    kind = record_kinds(batch)
    if "flow_age" not in batch:
        return is_flow(batch)
    age = np.asarray(batch["flow_age"], dtype=np.float64)
    if not np.isfinite(age[kind == RECORD_SLICE]).all():
        return is_flow(batch)
    return (kind == RECORD_FLOW) | ((kind == RECORD_SLICE) & (age == 0.0))


def is_slice(batch: FlowBatch) -> np.ndarray:
    """Rows that stand for a flow's packets within one window (their sums are traffic)."""
    kind = record_kinds(batch)
    return (kind == RECORD_FLOW) | (kind == RECORD_SLICE) | (kind == RECORD_TAIL)


def view(batch: FlowBatch, which: str) -> FlowBatch:
    """The batch's whole flows (``FLOWS``) or its per-window slices (``SLICES``).

    Returns ``batch`` itself (no copy) when every row belongs to the view.
    """
    if "flow_record" not in batch:
        return batch
    keep = is_flow(batch) if which == FLOWS else is_slice(batch)
    return batch if keep.all() else batch.take_lazily(keep)


class LazyColumns(Mapping[str, np.ndarray]):
    """Columns made when first read (by whichever thread comes first), then kept.

    ``row_count`` tells :class:`FlowBatch` the length without making a column. A subclass
    makes a column in :meth:`_make` and may let its sources go in :meth:`_all_made`.
    Pickled, it is a plain dict of every column.
    """

    def __init__(self, names: Iterable[str], row_count: int) -> None:
        self._names = tuple(names)
        self.row_count = int(row_count)
        self._made: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _make(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def _all_made(self) -> None:
        """Called once every column is made."""

    def made(self) -> tuple[str, ...]:
        """The columns made so far."""
        with self._lock:
            return tuple(self._made)

    def __getitem__(self, name: str) -> np.ndarray:
        with self._lock:
            col = self._made.get(name)
            if col is None:
                if name not in self._names:
                    raise KeyError(name)
                col = self._made[name] = self._make(name)
                if len(self._made) == len(self._names):
                    self._all_made()
            return col

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __reduce__(self) -> tuple[type, tuple[dict[str, np.ndarray]]]:
        return (dict, (dict(self.items()),))


class Taken(LazyColumns):
    """The rows ``index`` selects of ``columns``, each column taken when it is first read.

    A window's analysis reads about half of its columns in each view (:func:`view`): a
    copy of every column of a 250,000-row window would be ~55 MB the analysis never reads.
    """

    def __init__(self, columns: Mapping[str, np.ndarray], index: np.ndarray) -> None:
        super().__init__(columns, int(index.sum()) if index.dtype == bool else len(index))
        self._columns: Mapping[str, np.ndarray] | None = columns
        self._index = index

    def _make(self, name: str) -> np.ndarray:
        assert self._columns is not None
        return np.asarray(self._columns[name])[self._index]

    def _all_made(self) -> None:
        self._columns = None  # every column is taken: the source can go


@dataclass(frozen=True)
class FlowBatch:
    """A batch of flows as equal-length columns (see module docstring)."""

    columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        rows = getattr(self.columns, "row_count", None)  # not unpacked yet (flow_sample)
        if rows is not None:
            return int(rows)
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

    def take_lazily(self, index: np.ndarray) -> FlowBatch:
        """Return the rows selected by ``index`` (a boolean mask or an index array), each
        column copied when it is first read (:class:`Taken`): for short-lived selections
        that read a few columns. It keeps this batch's columns alive while it lives."""
        return FlowBatch(Taken(self.columns, np.asarray(index)))

    def rows(self, start: int, stop: int) -> FlowBatch:
        """Rows ``start`` to ``stop`` (excluded) as views of the columns (no copy)."""
        return FlowBatch({k: v[start:stop] for k, v in self.columns.items()})

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
                    parts.append(missing_column(k, len(b)))
            out[k] = np.concatenate(parts)
        return FlowBatch(out)


def missing_column(name: str, n: int) -> np.ndarray:
    """Column ``name`` of ``n`` rows where it is missing (0, NaN or "", by its kind)."""
    if name in KEY_COLUMNS:
        return np.zeros(n, dtype=KEY_COLUMNS[name])
    if name in STRING_COLUMNS:
        return np.full(n, "", dtype=object)
    return np.full(n, np.nan, dtype=np.float64)


def make_batch(n: int, **columns: np.ndarray | Iterable[object]) -> FlowBatch:
    """Build a complete batch of ``n`` flows; columns not given are missing (NaN/0/"")."""
    out: dict[str, np.ndarray] = {}
    for name in (*KEY_COLUMNS, *FEATURE_COLUMNS, *STRING_COLUMNS):
        out[name] = missing_column(name, n)
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


# Features the models use by default (models.DEFAULT_FEATURES, the set `train` uses):
# present both in flows we build from captures and in CIC-IDS2017-style flow CSVs.
# Keys are numeric too.
MODEL_FEATURES: tuple[str, ...] = (
    "dst_port",
    "protocol",
    "Flow Duration",
    "Tot Fwd Pkts",
    "Tot Bwd Pkts",
    "TotLen Fwd Pkts",
    "TotLen Bwd Pkts",
    "Fwd Pkt Len Max",
    "Fwd Pkt Len Mean",
    "Bwd Pkt Len Max",
    "Bwd Pkt Len Mean",
    "Flow Byts/s",
    "Flow Pkts/s",
    "Flow IAT Mean",
    "Flow IAT Max",
    "Fwd IAT Mean",
    "Bwd IAT Mean",
    "FIN Flag Cnt",
    "SYN Flag Cnt",
    "RST Flag Cnt",
    "PSH Flag Cnt",
    "ACK Flag Cnt",
    "Init Fwd Win Byts",
    "Init Bwd Win Byts",
    "Down/Up Ratio",
    "Pkt Len Mean",
    "Pkt Len Std",
)


# The one home of protocol names: IANA protocol number -> the label packets, bytes and
# flows are counted under (netmon_*_total{protocol}); anything else is "other".
PROTOCOL_LABELS: dict[int, str] = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}
PROTOCOLS: tuple[str, ...] = (*PROTOCOL_LABELS.values(), "other")
# protocol number (0-255, 256 for anything out of range) -> index into PROTOCOLS
PROTOCOL_INDEX = np.full(257, len(PROTOCOLS) - 1, dtype=np.int64)
for _number, _label in PROTOCOL_LABELS.items():
    PROTOCOL_INDEX[_number] = PROTOCOLS.index(_label)


def protocol_counts(flows: FlowBatch) -> dict[str, int]:
    """Count flows by protocol label (tcp, udp, icmp, icmpv6, other); slices are not flows."""
    flows = view(flows, FLOWS)
    if not len(flows):
        return {}
    nums, counts = np.unique(flows["protocol"], return_counts=True)
    out: dict[str, int] = {}
    for n, c in zip(nums.tolist(), counts.tolist(), strict=True):
        key = PROTOCOL_LABELS.get(int(n), "other")
        out[key] = out.get(key, 0) + int(c)
    return out
