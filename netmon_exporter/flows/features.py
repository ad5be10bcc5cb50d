"""Turn finished flows' accumulators into CICFlowMeter feature columns (vectorised).

Units follow CICFlowMeter: durations and inter-arrival times in microseconds,
rates per second, lengths in bytes of transport payload. Standard deviations and
the variance are sample statistics (n - 1), as in the Java tool. Where the Java
tool is wrong we compute the intended value; docs/flow-features.md lists each.
"""

from __future__ import annotations

import numpy as np

from ..flow_schema import ADDR_DTYPE, CIC_FEATURES, EXTRA_FEATURES, FlowBatch
from . import flow_table as T


def _addr(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    raw = np.empty((len(hi), 2), dtype=">i8")
    raw[:, 0] = hi
    raw[:, 1] = lo
    return raw.view(ADDR_DTYPE).reshape(-1)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(a, b).shape, dtype=np.float64)
    np.divide(a, b, out=out, where=b != 0)
    return out


class _Stats:
    """Accessors for one Welford statistics group of the accumulator matrix."""

    def __init__(self, S: np.ndarray, base: int) -> None:
        self.n = S[:, base + T.ST_N]
        self.sum = S[:, base + T.ST_SUM]
        has = self.n > 0
        self.mean = np.where(has, S[:, base + T.ST_MEAN], 0.0)
        self.max = np.where(has, S[:, base + T.ST_MAX], 0.0)
        self.min = np.where(has, S[:, base + T.ST_MIN], 0.0)
        m2 = np.maximum(S[:, base + T.ST_M2], 0.0)
        self.var = _safe_div(m2, np.where(self.n > 1, self.n - 1, 0.0))
        self.std = np.sqrt(self.var)


def flow_batch(done: T.FinishedFlows) -> FlowBatch:
    """Compute every flow column (keys, CIC features, extras, strings) of finished flows."""
    S = done.S
    cols = _key_columns(done.K, S)
    cic = _cic_features(S)
    for name in CIC_FEATURES:
        cols[name] = np.ascontiguousarray(cic[name], dtype=np.float64)
    extra = _extra_features(done)
    for name in EXTRA_FEATURES:
        cols[name] = np.ascontiguousarray(extra[name], dtype=np.float64)
    kind = done.kinds()
    cut = np.flatnonzero((kind == T.REC_SLICE) | (kind == T.REC_TAIL))
    if len(cut):
        has_dns = S[:, T.S_DNS_HAS] != 0
        _slices(cols, S[cut], done.dns()[cut], cut, has_dns[cut])
    cols["dns_qname"] = _query_names(done)
    cols["label"] = np.full(len(S), "", dtype=object)
    return FlowBatch(cols)


def _key_columns(K: np.ndarray, S: np.ndarray) -> dict[str, np.ndarray]:
    """Addresses, ports (ICMP: type and code), protocol and times, client first."""
    cols: dict[str, np.ndarray] = {}
    fwd_a = S[:, T.S_FWD_IS_A] != 0
    a = _addr(K[:, T.K_AHI], K[:, T.K_ALO])
    b = _addr(K[:, T.K_BHI], K[:, T.K_BLO])
    cols["src_ip"] = np.where(fwd_a, a, b)
    cols["dst_ip"] = np.where(fwd_a, b, a)
    proto = K[:, T.K_PROTO]
    icmp = (proto == 1) | (proto == 58)
    sport = np.where(fwd_a, K[:, T.K_APORT], K[:, T.K_BPORT])
    dport = np.where(fwd_a, K[:, T.K_BPORT], K[:, T.K_APORT])
    icmp_tc = (np.maximum(S[:, T.S_ICMP_T], 0).astype(np.int64) << 8) | np.maximum(
        S[:, T.S_ICMP_C], 0
    ).astype(np.int64)
    cols["src_port"] = np.where(icmp, 0, sport).astype(np.uint16)
    cols["dst_port"] = np.where(icmp, icmp_tc, dport).astype(np.uint16)
    cols["protocol"] = proto.astype(np.uint8)
    first = S[:, T.S_FIRST_TS]
    last = S[:, T.S_LAST_TS]
    cols["first_ts"] = first / 1e6
    cols["last_ts"] = last / 1e6
    return cols


# CIC features that are an accumulator column as it is (flag counts, header lengths, ...).
_DIRECT: dict[str, int] = {
    "Fwd PSH Flags": T.S_FWD_PSH,
    "Bwd PSH Flags": T.S_FWD_PSH + 1,
    "Fwd URG Flags": T.S_FWD_URG,
    "Bwd URG Flags": T.S_FWD_URG + 1,
    "Fwd Header Len": T.S_FWD_HDR,
    "Bwd Header Len": T.S_FWD_HDR + 1,
    "FIN Flag Cnt": T.S_FLAG + 0,
    "SYN Flag Cnt": T.S_FLAG + 1,
    "RST Flag Cnt": T.S_FLAG + 2,
    "PSH Flag Cnt": T.S_FLAG + 3,
    "ACK Flag Cnt": T.S_FLAG + 4,
    "URG Flag Cnt": T.S_FLAG + 5,
    "CWE Flag Count": T.S_FLAG + 7,
    "ECE Flag Cnt": T.S_FLAG + 6,
    "Init Fwd Win Byts": T.S_INIT_WIN,
    "Init Bwd Win Byts": T.S_INIT_WIN + 1,
    "Fwd Act Data Pkts": T.S_FWD_ACT_DATA,
    "Fwd Seg Size Min": T.S_FWD_HDR_MIN,
}


def _cic_features(S: np.ndarray) -> dict[str, np.ndarray]:
    """The CICFlowMeter features of whole flows (slices are adjusted by ``_slices``)."""
    dur = S[:, T.S_LAST_TS] - S[:, T.S_FIRST_TS]
    dur_s = dur / 1e6
    fl = _Stats(S, T.S_FLEN)
    bl = _Stats(S, T.S_FLEN + 6)
    al = _Stats(S, T.S_ALEN)
    fiat = _Stats(S, T.S_FIAT)
    fwiat = _Stats(S, T.S_FWIAT)
    bwiat = _Stats(S, T.S_FWIAT + 6)
    act = _Stats(S, T.S_ACT)
    idle = _Stats(S, T.S_IDLE)
    npk = fl.n + bl.n
    sf = np.maximum(S[:, T.S_SF_COUNT], 1.0)

    def bulk(d: int, field: int) -> np.ndarray:
        return S[:, T.S_BULK + 8 * d + field]

    f: dict[str, np.ndarray] = {
        "Flow Duration": dur,
        "Tot Fwd Pkts": fl.n,
        "Tot Bwd Pkts": bl.n,
        "TotLen Fwd Pkts": fl.sum,
        "TotLen Bwd Pkts": bl.sum,
        "Fwd Pkt Len Max": fl.max,
        "Fwd Pkt Len Min": fl.min,
        "Fwd Pkt Len Mean": fl.mean,
        "Fwd Pkt Len Std": fl.std,
        "Bwd Pkt Len Max": bl.max,
        "Bwd Pkt Len Min": bl.min,
        "Bwd Pkt Len Mean": bl.mean,
        "Bwd Pkt Len Std": bl.std,
        "Flow Byts/s": _safe_div(fl.sum + bl.sum, dur_s),
        "Flow Pkts/s": _safe_div(npk, dur_s),
        "Flow IAT Mean": fiat.mean,
        "Flow IAT Std": fiat.std,
        "Flow IAT Max": fiat.max,
        "Flow IAT Min": fiat.min,
        "Fwd IAT Tot": fwiat.sum,
        "Fwd IAT Mean": fwiat.mean,
        "Fwd IAT Std": fwiat.std,
        "Fwd IAT Max": fwiat.max,
        "Fwd IAT Min": fwiat.min,
        "Bwd IAT Tot": bwiat.sum,
        "Bwd IAT Mean": bwiat.mean,
        "Bwd IAT Std": bwiat.std,
        "Bwd IAT Max": bwiat.max,
        "Bwd IAT Min": bwiat.min,
        "Fwd Pkts/s": _safe_div(fl.n, dur_s),
        "Bwd Pkts/s": _safe_div(bl.n, dur_s),
        "Pkt Len Min": al.min,
        "Pkt Len Max": al.max,
        "Pkt Len Mean": al.mean,
        "Pkt Len Std": al.std,
        "Pkt Len Var": al.var,
        "Down/Up Ratio": _safe_div(bl.n, fl.n),
        "Pkt Size Avg": _safe_div(al.sum, npk),
        "Fwd Seg Size Avg": fl.mean,
        "Bwd Seg Size Avg": bl.mean,
        "Fwd Byts/b Avg": _safe_div(bulk(0, T.B_SIZE), bulk(0, T.B_STATES)),
        "Fwd Pkts/b Avg": _safe_div(bulk(0, T.B_PKTS), bulk(0, T.B_STATES)),
        "Fwd Blk Rate Avg": _safe_div(bulk(0, T.B_SIZE), bulk(0, T.B_DUR) / 1e6),
        "Bwd Byts/b Avg": _safe_div(bulk(1, T.B_SIZE), bulk(1, T.B_STATES)),
        "Bwd Pkts/b Avg": _safe_div(bulk(1, T.B_PKTS), bulk(1, T.B_STATES)),
        "Bwd Blk Rate Avg": _safe_div(bulk(1, T.B_SIZE), bulk(1, T.B_DUR) / 1e6),
        "Subflow Fwd Pkts": fl.n / sf,
        "Subflow Fwd Byts": fl.sum / sf,
        "Subflow Bwd Pkts": bl.n / sf,
        "Subflow Bwd Byts": bl.sum / sf,
        "Active Mean": act.mean,
        "Active Std": act.std,
        "Active Max": act.max,
        "Active Min": act.min,
        "Idle Mean": idle.mean,
        "Idle Std": idle.std,
        "Idle Max": idle.max,
        "Idle Min": idle.min,
    }
    f.update({name: S[:, col] for name, col in _DIRECT.items()})
    return f


def _extra_features(done: T.FinishedFlows) -> dict[str, np.ndarray]:
    """Our columns beyond CICFlowMeter's: flags by direction, ICMP, DNS, wire bytes."""
    K, S = done.K, done.S
    n = len(S)
    proto = K[:, T.K_PROTO]
    icmp = (proto == 1) | (proto == 58)
    nan = np.full(n, np.nan)
    has_dns = S[:, T.S_DNS_HAS] != 0
    has_name = S[:, T.S_QPOOL_LEN] >= 0

    def dns(values: np.ndarray) -> np.ndarray:
        return np.where(has_dns, values, nan)

    DN = done.dns()
    named = DN[:, T.D_QNAMED]
    extra = {
        "fwd_syn_cnt": S[:, T.S_SYN],
        "bwd_syn_cnt": S[:, T.S_SYN + 1],
        "fwd_fin_cnt": S[:, T.S_FIN],
        "bwd_fin_cnt": S[:, T.S_FIN + 1],
        "fwd_rst_cnt": S[:, T.S_RST],
        "bwd_rst_cnt": S[:, T.S_RST + 1],
        "icmp_type": np.where(icmp, S[:, T.S_ICMP_T], nan),
        "icmp_code": np.where(icmp, S[:, T.S_ICMP_C], nan),
        "dns_queries": np.where(has_dns, S[:, T.S_DNS_Q], nan),
        "dns_qname_len": np.where(has_name, S[:, T.S_DNS_QLEN], nan),
        "dns_qname_labels": np.where(has_name, S[:, T.S_DNS_QLABELS], nan),
        "dns_qname_entropy": np.where(has_name, S[:, T.S_DNS_QENT], nan),
        "dns_nxdomain": np.where(has_dns, S[:, T.S_DNS_NX], nan),
        "dns_qnames": dns(_hll_estimate(DN, T.D_HLL_NAMES, T.HLL_NAMES, has_dns)),
        "dns_zones": dns(_hll_estimate(DN, T.D_HLL_ZONES, T.HLL_ZONES, has_dns)),
        "dns_qname_len_total": dns(DN[:, T.D_QLEN_SUM]),
        "dns_qname_len_max": dns(DN[:, T.D_QLEN_MAX]),
        "dns_label_entropy": dns(_safe_div(DN[:, T.D_LENT_SUM], named)),
        "dns_query_bytes": dns(DN[:, T.D_QBYTES]),
        "dns_response_bytes": dns(DN[:, T.D_RBYTES]),
        "flow_record": done.kinds().astype(np.float64),
        "flow_age": np.zeros(n),
        "fwd_wire_bytes": S[:, T.S_FWD_WIRE],
        "bwd_wire_bytes": S[:, T.S_BYTES] - S[:, T.S_FWD_WIRE],
    }
    return extra


def _query_names(done: T.FinishedFlows) -> np.ndarray:
    """Each flow's first DNS query name ("" when none), from the table's name pool."""
    S = done.S
    qname = np.full(len(S), "", dtype=object)
    rows = np.flatnonzero(S[:, T.S_QPOOL_LEN] > 0)
    if not len(rows):
        return qname
    pool = done.pool
    off = S[rows, T.S_QPOOL_OFF].astype(np.int64)
    ln = S[rows, T.S_QPOOL_LEN].astype(np.int64)
    bulk = (off >= 0) & (off + ln <= len(pool)) & (ln <= 255)  # names as the table keeps them
    if bulk.any():
        # ASCII without NUL (almost every name) in bulk: numpy decodes ASCII as Python does
        o, n = off[bulk], ln[bulk]
        inside = np.arange(n.max()) < n[:, None]
        mat = np.where(inside, pool[np.where(inside, o[:, None] + np.arange(n.max()), 0)], 0)
        ascii = (((mat > 0) & (mat < 128)) | ~inside).all(axis=1)
        names = mat[ascii].astype(np.uint8).view(f"S{mat.shape[1]}").ravel().astype(str)
        qname[rows[bulk][ascii]] = names.astype(object)
        bulk[np.flatnonzero(bulk)[~ascii]] = False
    for i, o, n in zip(rows[~bulk], off[~bulk], ln[~bulk], strict=True):
        qname[i] = pool[o : o + n].tobytes().decode("ascii", "backslashreplace")
    return qname


_HLL_ALPHA = {16: 0.673, 32: 0.697, 64: 0.709}
# Four registers (16 bits of a sketch word) at a time: the sum of 2**-register over them,
# and how many of them are zero. Sums of such powers of two are exact in float64 in any
# order, so the estimate is the textbook one to the bit.
_QUAD = np.arange(1 << 16, dtype=np.uint16)
_NIBBLES = [(_QUAD >> np.uint16(4 * k)) & np.uint16(15) for k in range(4)]
_QUAD_POW = np.exp2(-np.arange(16.0))[_NIBBLES[0]]
_QUAD_ZEROS = (_NIBBLES[0] == 0).astype(np.int8)
for _n in _NIBBLES[1:]:
    _QUAD_POW += np.exp2(-np.arange(16.0))[_n]
    _QUAD_ZEROS += (_n == 0).astype(np.int8)
del _QUAD, _NIBBLES, _n
if T.HLL_BITS != 4 or T.HLL_PER_COL % 4:
    raise ImportError("_hll_estimate reads four 4-bit registers at a time")


def _hll_estimate(DN: np.ndarray, base: int, m: int, rows: np.ndarray) -> np.ndarray:
    """Distinct-count estimate of the HyperLogLog sketches of ``m`` registers at ``base``.

    Registers are packed as in ``flow_table._hll_put`` (``HLL_PER_COL`` registers of
    ``HLL_BITS`` bits in the low bits of each column); small counts use linear counting
    (Flajolet et al., 2007). Relative standard error about 1.04 / sqrt(m) (13 % for the
    64 registers of a name sketch). Only ``rows`` are estimated (0 elsewhere).
    """
    out = np.zeros(len(DN))
    idx = np.flatnonzero(rows)
    if not len(idx):
        return out
    per, bits = T.HLL_PER_COL, T.HLL_BITS
    cols = -(-m // per)
    words = DN[idx, base : base + cols].astype("<i8")  # whole numbers below 2**48
    words[:, -1] &= (1 << (bits * (m - (cols - 1) * per))) - 1  # slots past m read as 0
    quads = words.view("<u2").reshape(len(idx), cols, 4)[:, :, : per // 4]
    quads = quads.reshape(len(idx), cols * per // 4)
    unused = cols * per - m  # zero registers that are not the sketch's: 2**-0 each
    total = _QUAD_POW[quads].sum(axis=1) - unused
    zeros = _QUAD_ZEROS[quads].sum(axis=1, dtype=np.int64) - unused
    est = _HLL_ALPHA[m] * m * m / total
    small = (est <= 2.5 * m) & (zeros > 0)
    est[small] = m * np.log(m / zeros[small])
    out[idx] = np.round(est)
    return out


def _slices(
    cols: dict[str, np.ndarray], S: np.ndarray, DN: np.ndarray, at: np.ndarray, dns: np.ndarray
) -> None:
    """Replace the additive columns of slice records (rows ``at``) by the slice's own.

    A slice's counts are its accumulators minus their values at the previous cut; its
    times are its own first and last packet. Statistics that cannot be split (minimum,
    maximum and spread of lengths and gaps, active/idle, bulk, window sizes) stay those
    of the flow so far.
    """
    first = S[:, T.S_SL_FIRST]
    last = S[:, T.S_LAST_TS]
    dur = np.maximum(last - first, 0.0)
    dur_s = dur / 1e6
    fn = S[:, T.S_FLEN + T.ST_N] - S[:, T.S_B_PKTS]
    bn = S[:, T.S_FLEN + 6 + T.ST_N] - S[:, T.S_B_PKTS + 1]
    fb = S[:, T.S_FLEN + T.ST_SUM] - S[:, T.S_B_BYTES]
    bb = S[:, T.S_FLEN + 6 + T.ST_SUM] - S[:, T.S_B_BYTES + 1]

    def delta(col: int, base: int) -> np.ndarray:
        return S[:, col] - S[:, base]

    syn = (delta(T.S_SYN, T.S_B_SYN), delta(T.S_SYN + 1, T.S_B_SYN + 1))
    fin = (delta(T.S_FIN, T.S_B_FIN), delta(T.S_FIN + 1, T.S_B_FIN + 1))
    rst = (delta(T.S_RST, T.S_B_RST), delta(T.S_RST + 1, T.S_B_RST + 1))
    psh = (delta(T.S_FWD_PSH, T.S_B_PSH), delta(T.S_FWD_PSH + 1, T.S_B_PSH + 1))

    def dns_delta(now: np.ndarray, then: np.ndarray) -> np.ndarray:
        return np.where(dns, now - then, np.nan)

    def dn(k: int) -> np.ndarray:  # a per-query DNS accumulator's slice value
        return dns_delta(DN[:, k], DN[:, T.D_B_QNAMED + k - T.D_QNAMED])

    new = {
        "first_ts": first / 1e6,
        "Flow Duration": dur,
        "Tot Fwd Pkts": fn,
        "Tot Bwd Pkts": bn,
        "TotLen Fwd Pkts": fb,
        "TotLen Bwd Pkts": bb,
        "Fwd Pkt Len Mean": _safe_div(fb, fn),
        "Bwd Pkt Len Mean": _safe_div(bb, bn),
        "Fwd Seg Size Avg": _safe_div(fb, fn),
        "Bwd Seg Size Avg": _safe_div(bb, bn),
        "Flow Byts/s": _safe_div(fb + bb, dur_s),
        "Flow Pkts/s": _safe_div(fn + bn, dur_s),
        "Fwd Pkts/s": _safe_div(fn, dur_s),
        "Bwd Pkts/s": _safe_div(bn, dur_s),
        "Pkt Len Mean": _safe_div(fb + bb, fn + bn),
        "Pkt Size Avg": _safe_div(fb + bb, fn + bn),
        "Down/Up Ratio": _safe_div(bn, fn),
        "Fwd PSH Flags": psh[0],
        "Bwd PSH Flags": psh[1],
        "FIN Flag Cnt": fin[0] + fin[1],
        "SYN Flag Cnt": syn[0] + syn[1],
        "RST Flag Cnt": rst[0] + rst[1],
        "PSH Flag Cnt": psh[0] + psh[1],
        "ACK Flag Cnt": delta(T.S_FLAG + 4, T.S_B_ACK),
        "fwd_syn_cnt": syn[0],
        "bwd_syn_cnt": syn[1],
        "fwd_fin_cnt": fin[0],
        "bwd_fin_cnt": fin[1],
        "fwd_rst_cnt": rst[0],
        "bwd_rst_cnt": rst[1],
        "dns_queries": dns_delta(S[:, T.S_DNS_Q], DN[:, T.D_B_Q]),
        "dns_nxdomain": dns_delta(S[:, T.S_DNS_NX], DN[:, T.D_B_NX]),
        "dns_qnames": np.where(dns, _hll_estimate(DN, T.D_HLL_SLICE, T.HLL_NAMES, dns), np.nan),
        "dns_qname_len_total": dn(T.D_QLEN_SUM),
        "dns_qname_len_max": np.where(dns, DN[:, T.D_SL_QLEN_MAX], np.nan),
        "dns_label_entropy": np.where(dns, _safe_div(dn(T.D_LENT_SUM), dn(T.D_QNAMED)), np.nan),
        "dns_query_bytes": dn(T.D_QBYTES),
        "dns_response_bytes": dn(T.D_RBYTES),
        "flow_age": (first - S[:, T.S_FIRST_TS]) / 1e6,
        "fwd_wire_bytes": delta(T.S_FWD_WIRE, T.S_B_WIRE),
        "bwd_wire_bytes": S[:, T.S_BYTES] - S[:, T.S_FWD_WIRE] - S[:, T.S_B_WIRE + 1],
    }
    for name, values in new.items():
        column = cols[name].copy()  # may be a view of the accumulators (one-row batches)
        column[at] = values
        cols[name] = column
