"""The flow table: bidirectional flows keyed by 5-tuple, with incremental CIC accumulators.

Every packet updates one row of a float64 accumulator matrix ``S`` (one row per
flow, one column per ``S_*`` field below) in a compiled loop; a flow's key is a
row of the int64 matrix ``K``. Flows are found through an open-addressing hash
table rebuilt at every chunk boundary, when finished flows are handed out and
the table is compacted to the flows still open. State is therefore bounded by
the number of open flows plus one chunk, never by the size of the file, and the
open flows can be serialised (:meth:`FlowTable.to_bytes`) to continue in the
next file of a rotated capture.

The number of open flows is capped (``max_open``, ``flows.max_open_flows``): open
flows are kept in a least-recently-active list (a packet moves its flow to the
end), and a new flow that would exceed the cap first ends the flow at the head
of the list, whose latest packet came earliest. Such an *evicted* flow is
emitted like any ended flow (with the features it has so far) and counted; a
later packet of it starts a new flow. Eviction depends only on the order of the
packets, so chunk boundaries do not change it either.

Flow semantics (see docs/flow-features.md):

* the client (forward direction) is the sender of the first packet seen, or its
  receiver when that packet is a SYN-ACK (reordered handshake, SYN not captured);
* a flow ends after ``idle`` without packets or ``active`` after its first packet;
* a TCP flow is *closed* once both sides sent FIN, or on RST; packets that
  follow within ``close_grace`` (final ACK, retransmitted FIN) stay in it, a
  SYN without ACK or a later packet starts a new flow;
* ICMP echo-like messages are keyed by identifier, other ICMP by type and code.

Expiry depends only on packet timestamps, so where chunk or file boundaries
fall does not change the flows.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..capture import decode as D
from ..compiled import njit

# Accumulator columns ----------------------------------------------------------------
S_FIRST_TS = 0
S_LAST_TS = 1
S_FWD_LAST = 2  # + direction (0 forward, 1 backward)
# Statistics groups: n, sum, mean, m2 (Welford), max, min.
ST_N, ST_SUM, ST_MEAN, ST_M2, ST_MAX, ST_MIN = range(6)
S_FLEN = 4  # forward payload lengths; backward at S_FLEN + 6
S_ALEN = 16  # all payload lengths
S_FIAT = 22  # flow inter-arrival times
S_FWIAT = 28  # forward IATs; backward at S_FWIAT + 6
S_ACT = 40  # active periods
S_IDLE = 46  # idle periods
S_FWD_HDR = 52  # + direction
S_FWD_PSH = 54
S_FWD_URG = 56
S_FLAG = 58  # + bit number: FIN SYN RST PSH ACK URG ECE CWR
S_FWD_HDR_MIN = 66
S_FWD_ACT_DATA = 67
S_INIT_WIN = 68  # + direction; -1 until a packet in that direction
S_BULK = 70  # + 8 * direction: start, pkts helper, size helper, last ts,
B_START, B_PH, B_SH, B_LAST, B_STATES, B_PKTS, B_SIZE, B_DUR = range(8)  # bulk fields
S_SF_LAST = 86
S_SF_COUNT = 87
S_START_ACTIVE = 88
S_END_ACTIVE = 89
S_SYN = 90  # + direction
S_FIN = 92
S_RST = 94
S_ICMP_T = 96
S_ICMP_C = 97
S_DNS_HAS = 98
S_DNS_Q = 99
S_DNS_NX = 100
S_DNS_QLEN = 101
S_DNS_QLABELS = 102
S_DNS_QENT = 103
S_QPOOL_OFF = 104
S_QPOOL_LEN = 105  # -1 when no name stored
S_FWD_IS_A = 106
S_PKTS = 107
S_BYTES = 108  # wire bytes, both directions
S_FWD_WIRE = 109  # wire bytes forward
NS_V1 = 110  # columns of carry state saved before interim records (widened on load)
# Interim records: a flow still open at a window boundary is cut there (an IPFIX active
# timeout aligned to windows). Each S_B_* column holds the value its accumulator had
# when the flow's last interim record was emitted (0 before), so a slice's counts are
# the difference, like IPFIX delta counters.
S_SL_FIRST = 110  # first packet of the current slice; -1 until it has one
S_SL_SEQ = 111  # interim records emitted so far (0: never cut)
S_B_PKTS = 112  # + direction: packets (ST_N of S_FLEN + 6 * direction)
S_B_BYTES = 114  # + direction: payload bytes (ST_SUM)
S_B_SYN = 116  # + direction
S_B_FIN = 118  # + direction
S_B_RST = 120  # + direction
S_B_PSH = 122  # + direction
S_B_ACK = 124
S_DNS_SLOT = 125  # row of the flow's per-query DNS statistics in D (-1: none)
NS_V2 = 126  # columns of carry state saved before wire-byte slices (widened on load)
S_B_WIRE = 126  # + direction: wire bytes (S_FWD_WIRE; backward S_BYTES - S_FWD_WIRE)
NS = 128

# Per-query DNS statistics live in a side table D, one row per flow that carried DNS,
# so that the many flows without DNS do not pay for them (queries: QR = 0 messages with
# a readable name).
D_QNAMED = 0  # queries with a name (D_QNAMED .. D_RBYTES: additive, sliced by bases)
D_QLEN_SUM = 1  # sum of their name lengths
D_LENT_SUM = 2  # sum of their label entropies (bits/char)
D_QBYTES = 3  # payload bytes of queries
D_RBYTES = 4  # payload bytes of responses
D_QLEN_MAX = 5
D_SL_QLEN_MAX = 6  # longest query name in the current slice
D_B_Q = 7  # bases (values at the last cut) of S_DNS_Q, S_DNS_NX and D_QNAMED .. D_RBYTES
D_B_NX = 8
D_B_QNAMED = 9  # + k: base of D_QNAMED + k
# HyperLogLog sketches: 12 registers of 4 bits per column (48 bits, exact in a float64);
# ranks are capped at 15, so a sketch of m registers saturates near m * 2**14 names.
HLL_BITS, HLL_PER_COL = 4, 12
HLL_NAMES, HLL_ZONES = 64, 16  # registers: standard error about 13 % and 26 %
HLL_NAMES_COLS = -(-HLL_NAMES // HLL_PER_COL)  # 6
HLL_ZONES_COLS = -(-HLL_ZONES // HLL_PER_COL)  # 2
D_HLL_NAMES = 14  # distinct query names of the flow
D_HLL_SLICE = D_HLL_NAMES + HLL_NAMES_COLS  # distinct query names of the current slice
D_HLL_ZONES = D_HLL_SLICE + HLL_NAMES_COLS  # distinct registered domains of the flow
ND = D_HLL_ZONES + HLL_ZONES_COLS  # 28

# What a record stands for (FinishedFlows.kind; the flow_record column, flow_schema.RECORD_*)
REC_FLOW, REC_SLICE, REC_TAIL, REC_WHOLE = 0, 1, 2, 3

# Key columns: endpoint A < endpoint B (address, port), protocol, ICMP key.
K_AHI, K_ALO, K_BHI, K_BLO, K_APORT, K_BPORT, K_PROTO, K_AUX = range(8)
NK = 8

FLOW_FREE, FLOW_OPEN, FLOW_CLOSED, FLOW_DONE = 0, 1, 2, 3

# params: idle, active, activity timeout, close grace, interim slice length (0: none; all
# microseconds), whether flows of up to three packets are seeds (1.0) or get rows at once
P_IDLE, P_ACTIVE, P_ACTIVITY, P_GRACE, P_SLICE, P_SEEDS = range(6)
# st: flows in use, name pool bytes used, latest timestamp seen, next slice boundary (-1:
# not yet known), why process_packets stopped early (STOP_*), rows of D in use, rows of
# S in use, rows of DS (the DNS of seeds) in use, the keys of the name sketches' hash and
# of the hash table's
ST_FLOWS, ST_POOL, ST_LATEST, ST_BOUNDARY, ST_STOP, ST_DNS, ST_SROWS, ST_DSEEDS = range(8)
# The distinct-name sketches (HyperLogLog) hash each query name from a starting value
# mixed with this key. Unkeyed, an attacker can search names offline for ones that all
# fall into one register with the lowest rank (one name in 128 does for 64 registers), so
# that a tunnel of thousands of names counts as one; a key the attacker does not know
# leaves no such search. 0 (the default, and in state saved before keys): the plain hash,
# the same estimates every run. The daemon draws a key at start; a table keeps its own
# (saved with its carry), so one flow's sketch is never built with two.
ST_KEY = 8
# The key of the hash table's hash (``_hash``), drawn for each table object and never
# saved (a carry saves 0; the table is rebuilt, under its new key, when loaded). Unkeyed,
# or with only its starting value keyed, an FNV-style chain's low bits depend only on the
# words' low bits: flows whose addresses differ only in their top bits (the top of an IPv6
# interface id, 8192 sources of any /64) took one slot, and every lookup walked all of
# them (64,000 such SYNs took 2.75 s instead of 0.12). The key and a full finaliser leave
# an attacker no way to tell which flows share a slot. The slots never show in results.
ST_TKEY = 9
STOP_BOUNDARY, STOP_DNS_FULL, STOP_SROWS = 1, 2, 3

# Seeds. Most open flows of a flood or a scan never see a fourth packet (a probe, a
# spoofed SYN, a SYN answered by a SYN-ACK, an echo and its reply, a handshake left idle
# or a connection flood's), and a row of S (1 kB) is most of what a flow costs. A flow's
# accumulators therefore live in a row of S only from its fourth packet on (``srow[f]``,
# the row; ``owner[r]``, its flow); until then (``srow[f]`` < 0) its packets are kept in
# three words each of ``seed[f]``, and the row it would have had is rebuilt from them, by
# the same code, whenever it is needed (a fourth packet, an interim record, the flow's
# end, a carry). ``srow[f]`` says how many packets and where a cut at a window boundary
# fell: ``SEED`` one packet, ``SEED_CUT`` one packet then a cut, ``SEED2`` two packets,
# ``SEED2_CUT`` two packets then a cut, ``SEED3``/``SEED3_CUT`` three (a seed cut gets
# its row at its next packet). Packets whose fields do not fit the words get a row at
# once. A third packet stays in the seed only when it cannot change the flow's status
# (an open flow, no FIN or RST) and carries no DNS (its DNS would need a third part of
# the seed's row of DS): a handshake's ACK, a keep-alive, a third probe.
#
# A seed's DNS packets (most DNS flows are one query and its answer) keep what their
# DNS adds to the row and to its row of D in a row of the side table ``DS``
# (``seed[f, SD_DNS]``, -1: none), measured when the packet is planted (the packet's
# buffer is gone by the time the row is rebuilt) and its query name copied to the name
# pool then, as :func:`_update` would: per packet, a word of small integers (``DC_*``
# bits: which message, its name's length and labels, where its name went, the sketch
# registers it sets), the name's offset in the pool, its entropy (the decoder's) and
# the entropy of its labels left of the registered domain.
SEED, SEED_CUT, SEED2, SEED2_CUT, SEED3, SEED3_CUT = -1, -2, -3, -4, -5, -6
SEED_KINDS = (SEED, SEED_CUT, SEED2, SEED2_CUT, SEED3, SEED3_CUT)
SEEDS = True  # the default (tests compare both ways)
SD_TS, SD_LEN, SD_MISC = 0, 1, 2  # time; payload | wire << 32; the rest (see _plant)
SD_SECOND = 3  # the second packet's words start here
SD_DNS = 6  # row of DS with the seed's DNS (-1: none)
SD_THIRD = 7  # the third packet's words start here
NSD = 10
DS_CODE, DS_POFF, DS_PE, DS_ENT = range(4)  # per packet, the second's from NDS_PACKET
NDS_PACKET = 4
NDS = 2 * NDS_PACKET
# DS_CODE bits: DNS (else the packet carried none), a response, NXDOMAIN, a readable
# name, what became of the name (DC_NAME_*: the first name of a flow is kept), then
# fields at the DC_* shifts (their widths noted with them)
DC_DNS, DC_RESPONSE, DC_NX, DC_NAMED = 1, 2, 4, 8
DC_NAME_SHIFT = 4  # 0: not kept (not the first), 1: copied to the pool, 2: no room
DC_NAME_KEPT, DC_NAME_NO_ROOM = 1, 2
DC_QLEN, DC_LABELS, DC_NAME_LEN = 8, 17, 26  # 9 bits each
DC_NAMES_REG, DC_NAMES_RANK, DC_ZONES_REG, DC_ZONES_RANK = 35, 41, 45, 49  # 6, 4, 4, 4 bits

# Per-flow links (int64 matrix, -1: none): the least-recently-active list of open flows
# and the list of closed flows (in their grace period) by last activity.
LK_PRV, LK_NXT, LK_CPRV, LK_CNXT = range(4)
NLK = 4
# lru: head and tail of both lists (-1: empty), open flows, flows evicted so far, the
# cap on open flows (0: none), the first row that may hold a live flow (rows are in
# order of creation, so of first packet)
L_HEAD, L_TAIL, L_LIVE, L_EVICTED, L_CAP, L_CHEAD, L_CTAIL, L_OLDEST = range(8)

POOL_BYTES = 1 << 22


@njit(cache=True, inline="always")
def _stat(S, f, base, x):
    n = S[f, base] + 1.0
    S[f, base] = n
    S[f, base + 1] += x
    d = x - S[f, base + 2]
    S[f, base + 2] += d / n
    S[f, base + 3] += d * (x - S[f, base + 2])
    if n == 1.0 or x > S[f, base + 4]:
        S[f, base + 4] = x
    if n == 1.0 or x < S[f, base + 5]:
        S[f, base + 5] = x


@njit(cache=True, inline="always")
def _hash(ahi, alo, bhi, blo, ap, bp, pr, aux, key):
    """The hash table's hash of a flow key, keyed (``ST_TKEY``); its low bits (the slot)
    depend on every bit of every word (MurmurHash3's finaliser)."""
    h = np.int64(-7046029254386353131) ^ key
    h = (h ^ ahi) * np.int64(1099511628211)
    h = (h ^ alo) * np.int64(1099511628211)
    h = (h ^ bhi) * np.int64(1099511628211)
    h = (h ^ blo) * np.int64(1099511628211)
    h = (h ^ (ap << 16 | bp)) * np.int64(1099511628211)
    h = (h ^ (pr << 32 | aux)) * np.int64(1099511628211)
    return _mix64(h)


@njit(cache=True, nogil=True)
def rebuild_table(K, status, nflows, table, key):
    """Index every open flow of ``K[:nflows]`` in ``table`` (size a power of two), hashed
    with ``key`` (``ST_TKEY``)."""
    mask = len(table) - 1
    for s in range(len(table)):
        table[s] = -1
    for f in range(nflows):
        if status[f] != FLOW_OPEN and status[f] != FLOW_CLOSED:
            continue
        h = _hash(K[f, 0], K[f, 1], K[f, 2], K[f, 3], K[f, 4], K[f, 5], K[f, 6], K[f, 7], key)
        h &= mask
        while table[h] != -1:
            h = (h + 1) & mask
        table[h] = f


@njit(cache=True, inline="always")
def _unlink(links, lru, f, c):
    """Take flow ``f`` out of a list (``c`` 0: least recently active, 2: closed)."""
    p = links[f, LK_PRV + c]
    q = links[f, LK_NXT + c]
    if p >= 0:
        links[p, LK_NXT + c] = q
    else:
        lru[L_HEAD + 5 * (c // 2)] = q
    if q >= 0:
        links[q, LK_PRV + c] = p
    else:
        lru[L_TAIL + 5 * (c // 2)] = p
    links[f, LK_PRV + c] = -1
    links[f, LK_NXT + c] = -1


@njit(cache=True, inline="always")
def _append(links, lru, f, c):
    """Put flow ``f`` at the end of a list (``c`` as in :func:`_unlink`)."""
    t = lru[L_TAIL + 5 * (c // 2)]
    links[f, LK_PRV + c] = t
    links[f, LK_NXT + c] = -1
    if t >= 0:
        links[t, LK_NXT + c] = f
    else:
        lru[L_HEAD + 5 * (c // 2)] = f
    lru[L_TAIL + 5 * (c // 2)] = f


@njit(cache=True, inline="always")
def _ts(S, srow, seed, f, col):
    """Flow ``f``'s time ``col`` (S_FIRST_TS or S_LAST_TS): a seed's is its packet's."""
    r = srow[f]
    if r >= 0:
        return S[r, col]
    t = seed[f, SD_TS]
    if col == S_LAST_TS and r <= SEED2:
        if seed[f, SD_SECOND + SD_TS] > t:
            t = seed[f, SD_SECOND + SD_TS]
        if r <= SEED3 and seed[f, SD_THIRD + SD_TS] > t:
            t = seed[f, SD_THIRD + SD_TS]
    return float(t)


@njit(cache=True, inline="always")
def _end_row(S, r):
    """What a flow's end adds to its accumulators: its last active period."""
    if S[r, S_END_ACTIVE] - S[r, S_START_ACTIVE] > 0:
        _stat(S, r, S_ACT, S[r, S_END_ACTIVE] - S[r, S_START_ACTIVE])


@njit(cache=True)
def _close(S, srow, status, f, links, lru):
    r = srow[f]
    if r >= 0:  # a seed's row gets this when it is rebuilt (status FLOW_DONE)
        _end_row(S, r)
    if status[f] == FLOW_CLOSED:
        _unlink(links, lru, f, 2)
    status[f] = FLOW_DONE
    _unlink(links, lru, f, 0)
    lru[L_LIVE] -= 1


@njit(cache=True)
def _end_timed_out(S, srow, seed, status, nflows, now, params, links, lru):
    """End the flows that no packet after ``now`` can join, without scanning the table.

    The closed list's head has the oldest last packet of the closed flows, the
    least-recently-active list's head that of all flows, and the first live row the
    oldest first packet: timeouts are found at those heads (packet times in order).
    """
    while lru[L_CHEAD] >= 0 and now - _ts(S, srow, seed, lru[L_CHEAD], S_LAST_TS) > params[P_GRACE]:
        _close(S, srow, status, lru[L_CHEAD], links, lru)
    while lru[L_HEAD] >= 0 and now - _ts(S, srow, seed, lru[L_HEAD], S_LAST_TS) > params[P_IDLE]:
        _close(S, srow, status, lru[L_HEAD], links, lru)
    f = lru[L_OLDEST]
    while f < nflows:
        if status[f] == FLOW_OPEN or status[f] == FLOW_CLOSED:
            if now - _ts(S, srow, seed, f, S_FIRST_TS) <= params[P_ACTIVE]:
                break
            _close(S, srow, status, f, links, lru)
        f += 1
    lru[L_OLDEST] = f


@njit(cache=True)
def _bulk(S, f, d, t, L):
    """Update bulk state as CICFlowMeter does, but for the packet's real direction."""
    B = S_BULK + 8 * d
    BO = S_BULK + 8 * (1 - d)
    if S[f, BO + B_LAST] > S[f, B + B_START]:
        S[f, B + B_START] = -1.0
    if L <= 0:
        return
    if S[f, B + B_START] < 0 or (t - S[f, B + B_LAST]) > 1e6:
        S[f, B + B_START] = t
        S[f, B + B_LAST] = t
        S[f, B + B_PH] = 1.0
        S[f, B + B_SH] = L
        return
    S[f, B + B_PH] += 1.0
    S[f, B + B_SH] += L
    if S[f, B + B_PH] == 4.0:
        S[f, B + B_STATES] += 1.0
        S[f, B + B_PKTS] += S[f, B + B_PH]
        S[f, B + B_SIZE] += S[f, B + B_SH]
        S[f, B + B_DUR] += t - S[f, B + B_START]
    elif S[f, B + B_PH] > 4.0:
        S[f, B + B_PKTS] += 1.0
        S[f, B + B_SIZE] += L
        S[f, B + B_DUR] += t - S[f, B + B_LAST]
    S[f, B + B_LAST] = t


@njit(cache=True)
def _copy_qname(buf, qoff, pool, pos):
    """Write the dotted, lower-case query name at ``buf[qoff]`` to ``pool[pos:]``."""
    p = qoff
    w = pos
    first = True
    while True:
        ln = np.int64(buf[p])
        if ln == 0:
            break
        if not first:
            pool[w] = 46
            w += 1
        first = False
        for k in range(ln):
            c = buf[p + 1 + k]
            if 65 <= c <= 90:
                c += 32
            pool[w] = c
            w += 1
        p += 1 + ln
    return w - pos


@njit(cache=True, inline="always")
def _set_key(K, f, ahi, alo, bhi, blo, ap, bp, pr, aux):
    K[f, K_AHI] = ahi
    K[f, K_ALO] = alo
    K[f, K_BHI] = bhi
    K[f, K_BLO] = blo
    K[f, K_APORT] = ap
    K[f, K_BPORT] = bp
    K[f, K_PROTO] = pr
    K[f, K_AUX] = aux


@njit(cache=True)
def _init_row(S, r, fwd_is_a):
    """Row ``r`` as a flow without packets has it."""
    for k in range(NS):
        S[r, k] = 0.0
    S[r, S_FWD_IS_A] = 1.0 if fwd_is_a else 0.0
    S[r, S_INIT_WIN] = -1.0
    S[r, S_INIT_WIN + 1] = -1.0
    S[r, S_BULK + B_START] = -1.0
    S[r, S_BULK + B_LAST] = -1.0
    S[r, S_BULK + 8 + B_START] = -1.0
    S[r, S_BULK + 8 + B_LAST] = -1.0
    S[r, S_QPOOL_LEN] = -1.0
    S[r, S_ICMP_T] = -1.0
    S[r, S_ICMP_C] = -1.0
    S[r, S_SL_FIRST] = -1.0
    S[r, S_DNS_SLOT] = -1.0


@njit(cache=True)
def _expired(S, srow, seed, status, f, t, flags, params):
    last = _ts(S, srow, seed, f, S_LAST_TS)
    if t - last > params[P_IDLE]:
        return True
    if t - _ts(S, srow, seed, f, S_FIRST_TS) > params[P_ACTIVE]:
        return True
    if status[f] == FLOW_CLOSED:
        if (flags & 2) != 0 and (flags & 16) == 0:
            return True
        if t - last > params[P_GRACE]:
            return True
    return False


@njit(cache=True, inline="always")
def _mix64(h):
    """MurmurHash3's 64-bit finaliser on int64 (logical shifts by masking)."""
    h ^= (h >> 33) & np.int64(0x7FFFFFFF)
    h *= np.int64(-49064778989728563)  # 0xff51afd7ed558ccd
    h ^= (h >> 33) & np.int64(0x7FFFFFFF)
    h *= np.int64(-4265267296055464877)  # 0xc4ceb9fe1a85ec53
    h ^= (h >> 33) & np.int64(0x7FFFFFFF)
    return h


@njit(cache=True, inline="always")
def _hll_pick(h, m):
    """The register (of ``m``) and the rank that hash ``h`` offers a HyperLogLog sketch."""
    idx = h & (m - 1)
    w = (h >> 8) & np.int64((1 << 55) - 1)
    rank = np.int64(1)
    top = (1 << HLL_BITS) - 1
    while (w & 1) == 0 and rank < top:
        w >>= 1
        rank += 1
    return idx, rank


@njit(cache=True, inline="always")
def _hll_put(S, f, base, idx, rank):
    """Offer ``rank`` to register ``idx`` of the sketch at ``S[f, base:]``."""
    top = (1 << HLL_BITS) - 1
    col = base + idx // HLL_PER_COL
    sh = HLL_BITS * (idx % HLL_PER_COL)
    v = np.int64(S[f, col])
    if rank > ((v >> sh) & top):
        v = (v & ~(np.int64(top) << sh)) | (rank << sh)
        S[f, col] = float(v)


@njit(cache=True, inline="always")
def _query_put(DN, f, qlen, ent, code):
    """Add a query's statistics to row ``f`` of ``DN``: its name's length ``qlen``, the
    entropy ``ent`` of its labels and the sketch registers in ``code`` (DC_* fields)."""
    DN[f, D_QNAMED] += 1.0
    DN[f, D_QLEN_SUM] += qlen
    if qlen > DN[f, D_QLEN_MAX]:
        DN[f, D_QLEN_MAX] = qlen
    if qlen > DN[f, D_SL_QLEN_MAX]:
        DN[f, D_SL_QLEN_MAX] = qlen
    DN[f, D_LENT_SUM] += ent
    top = (1 << HLL_BITS) - 1
    ni = (code >> DC_NAMES_REG) & (HLL_NAMES - 1)
    nr = (code >> DC_NAMES_RANK) & top
    _hll_put(DN, f, D_HLL_NAMES, ni, nr)
    _hll_put(DN, f, D_HLL_SLICE, ni, nr)
    _hll_put(
        DN, f, D_HLL_ZONES, (code >> DC_ZONES_REG) & (HLL_ZONES - 1), (code >> DC_ZONES_RANK) & top
    )


@njit(cache=True)
def _query_measure(buf, qoff, labels, hist, key):
    """Measure the query name at ``buf[qoff]`` (``labels`` wire labels): the entropy of
    its labels left of the registered domain (the last two labels; the whole name when it
    has no more), and the sketch registers its name and domain set (DC_* fields), hashed
    with ``key`` (``ST_KEY``).
    """
    zone_from = labels - 2 if labels > 2 else 0
    counted = labels - 2 if labels > 2 else labels
    prime = np.int64(1099511628211)
    h = np.int64(-3750763034362895579) ^ key  # FNV-1a offset basis, keyed
    hz = h
    p = qoff
    n = 0
    for k in range(labels):
        ln = np.int64(buf[p])
        h = (h ^ ln) * prime
        if k >= zone_from:
            hz = (hz ^ ln) * prime
        for j in range(ln):
            c = np.int64(buf[p + 1 + j])
            if 65 <= c <= 90:
                c += 32
            h = (h ^ c) * prime
            if k >= zone_from:
                hz = (hz ^ c) * prime
            if k < counted:
                hist[c] += 1
                n += 1
        p += 1 + ln
    ent = 0.0
    p = qoff
    for _ in range(counted):
        ln = np.int64(buf[p])
        for j in range(ln):
            c = np.int64(buf[p + 1 + j])
            if 65 <= c <= 90:
                c += 32
            if hist[c] > 0:
                q = hist[c] / n
                ent -= q * np.log2(q)
                hist[c] = 0
        p += 1 + ln
    ni, nr = _hll_pick(_mix64(h), HLL_NAMES)
    zi, zr = _hll_pick(_mix64(hz), HLL_ZONES)
    code = (ni << DC_NAMES_REG) | (nr << DC_NAMES_RANK)
    return ent, code | (zi << DC_ZONES_REG) | (zr << DC_ZONES_RANK)


@njit(cache=True)
def _packet(S, r, status, f, d, ts, pay, pr, wire, hdr, win, flags, icmpt, icmpc, activity):
    """Add one packet (its fields but DNS) to the accumulators in row ``r`` of flow ``f``."""
    t = float(ts)
    L = float(pay)
    if S[r, S_SL_FIRST] < 0:
        S[r, S_SL_FIRST] = t
    if S[r, S_PKTS] == 0.0:
        S[r, S_FIRST_TS] = t
        S[r, S_LAST_TS] = t
        S[r, S_START_ACTIVE] = t
        S[r, S_END_ACTIVE] = t
        S[r, S_SF_LAST] = t
        S[r, S_SF_COUNT] = 1.0
        if pr == 1 or pr == 58:
            S[r, S_ICMP_T] = icmpt
            S[r, S_ICMP_C] = icmpc
    else:
        iat = t - S[r, S_LAST_TS]
        if iat < 0:
            iat = 0.0
        _stat(S, r, S_FIAT, iat)
        if iat > 1e6:
            S[r, S_SF_COUNT] += 1.0
        if t - S[r, S_END_ACTIVE] > activity:
            if S[r, S_END_ACTIVE] - S[r, S_START_ACTIVE] > 0:
                _stat(S, r, S_ACT, S[r, S_END_ACTIVE] - S[r, S_START_ACTIVE])
            _stat(S, r, S_IDLE, t - S[r, S_END_ACTIVE])
            S[r, S_START_ACTIVE] = t
            S[r, S_END_ACTIVE] = t
        elif t > S[r, S_END_ACTIVE]:
            S[r, S_END_ACTIVE] = t
        if t > S[r, S_LAST_TS]:
            S[r, S_LAST_TS] = t
    S[r, S_PKTS] += 1.0
    S[r, S_BYTES] += wire
    if d == 0:
        S[r, S_FWD_WIRE] += wire
    first_in_dir = S[r, S_FLEN + 6 * d] == 0.0
    _stat(S, r, S_FLEN + 6 * d, L)
    _stat(S, r, S_ALEN, L)
    if not first_in_dir:
        diat = t - S[r, S_FWD_LAST + d]
        if diat < 0:
            diat = 0.0
        _stat(S, r, S_FWIAT + 6 * d, diat)
    S[r, S_FWD_LAST + d] = t
    h = float(hdr)
    S[r, S_FWD_HDR + d] += h
    if d == 0:
        if first_in_dir or h < S[r, S_FWD_HDR_MIN]:
            S[r, S_FWD_HDR_MIN] = h
        if L >= 1:
            S[r, S_FWD_ACT_DATA] += 1.0
    if first_in_dir:
        S[r, S_INIT_WIN + d] = win
    if pr == 6:
        fl = flags
        for bit in range(8):
            if fl & (1 << bit):
                S[r, S_FLAG + bit] += 1.0
        if fl & 8:
            S[r, S_FWD_PSH + d] += 1.0
        if fl & 32:
            S[r, S_FWD_URG + d] += 1.0
        if fl & 2:
            S[r, S_SYN + d] += 1.0
        if fl & 1:
            S[r, S_FIN + d] += 1.0
        if fl & 4:
            S[r, S_RST + d] += 1.0
        if (fl & 4) or (S[r, S_FIN] > 0 and S[r, S_FIN + 1] > 0):
            status[f] = FLOW_CLOSED
    _bulk(S, r, d, t, L)


@njit(cache=True)
def _update(S, r, status, f, d, P, PE, i, buf, pool, st, params, hist, DN):
    """Add packet ``i`` of ``P`` to flow ``f`` (accumulators in row ``r`` of ``S``)."""
    L = float(P[i, D.F_PAY])
    _packet(
        S,
        r,
        status,
        f,
        d,
        P[i, D.F_TS],
        P[i, D.F_PAY],
        P[i, D.F_PROTO],
        P[i, D.F_WIRELEN],
        P[i, D.F_HDR],
        P[i, D.F_WIN],
        P[i, D.F_FLAGS],
        P[i, D.F_ICMPT],
        P[i, D.F_ICMPC],
        params[P_ACTIVITY],
    )
    if P[i, D.F_DNS] >= 0:
        code, poff, ent = _dns_measure(P, i, buf, pool, st, S[r, S_QPOOL_LEN] < 0, hist)
        if _dns_apply(S, r, DN, st[ST_DNS], code, poff, PE[i], ent, L):
            st[ST_DNS] += 1  # the caller made sure a row of DN is free


@njit(cache=True)
def _dns_measure(P, i, buf, pool, st, first_name, hist):
    """What DNS packet ``i`` adds to its flow, as (DC_* code, name offset, label entropy).

    Its query name (when it has one) is measured, and when ``first_name`` (no name of
    the flow was kept yet) copied to the name pool if there is room.
    """
    code = np.int64(DC_DNS)
    if P[i, D.F_DNS] != 0:
        code |= DC_RESPONSE
    if P[i, D.F_RCODE] == 3:
        code |= DC_NX
    qoff = P[i, D.F_QOFF]
    ent = 0.0
    poff = np.int64(0)
    if qoff < 0:
        return code, poff, ent
    # the decoder keeps names to 255 characters (so at most 128 labels): 9 bits each
    code |= DC_NAMED | (P[i, D.F_QLEN] << DC_QLEN) | (P[i, D.F_QLABELS] << DC_LABELS)
    if P[i, D.F_DNS] == 0:
        ent, regs = _query_measure(buf, qoff, P[i, D.F_QLABELS], hist, st[ST_KEY])
        code |= regs
    if first_name:
        used = st[ST_POOL]
        if used + 256 <= len(pool):
            w = _copy_qname(buf, qoff, pool, used)
            poff = used
            st[ST_POOL] = used + w
            code |= (DC_NAME_KEPT << DC_NAME_SHIFT) | (w << DC_NAME_LEN)
        else:
            code |= DC_NAME_NO_ROOM << DC_NAME_SHIFT
    return code, poff, ent


@njit(cache=True)
def _dns_apply(S, r, DN, new_slot, code, poff, pe, ent, L):
    """Add a DNS packet measured by :func:`_dns_measure` (payload ``L``, name entropy
    ``pe``) to row ``r`` of ``S`` and the flow's row of ``DN``; a flow without one gets
    row ``new_slot``. Return whether it did."""
    S[r, S_DNS_HAS] = 1.0
    slot = np.int64(S[r, S_DNS_SLOT])
    made = slot < 0
    if made:
        slot = new_slot
        S[r, S_DNS_SLOT] = slot
        for k in range(ND):
            DN[slot, k] = 0.0
        DN[slot, D_B_Q] = S[r, S_DNS_Q]  # DNS seen after a cut: the slice starts at 0
        DN[slot, D_B_NX] = S[r, S_DNS_NX]
    qlen = (code >> DC_QLEN) & 511
    if (code & DC_RESPONSE) == 0:
        S[r, S_DNS_Q] += 1.0
        DN[slot, D_QBYTES] += L
        if code & DC_NAMED:
            _query_put(DN, slot, qlen, ent, code)
    else:
        DN[slot, D_RBYTES] += L
        if code & DC_NX:
            S[r, S_DNS_NX] += 1.0
    name = (code >> DC_NAME_SHIFT) & 3
    if name != 0:
        S[r, S_DNS_QLEN] = qlen
        S[r, S_DNS_QLABELS] = (code >> DC_LABELS) & 511
        S[r, S_DNS_QENT] = pe
        if name == DC_NAME_KEPT:
            S[r, S_QPOOL_OFF] = poff
            S[r, S_QPOOL_LEN] = (code >> DC_NAME_LEN) & 511
        else:
            S[r, S_QPOOL_LEN] = 0.0
    return made


@njit(cache=True, inline="always")
def _seedable(P, i):
    """Whether packet ``i`` may be kept in a seed: its fields fit the words."""
    pay = P[i, D.F_PAY]
    wire = P[i, D.F_WIRELEN]
    if pay < 0 or pay > 0xFFFFFFFF or wire < 0 or wire > 0x7FFFFFFF:
        return False
    hdr = P[i, D.F_HDR]
    win = P[i, D.F_WIN]
    fl = P[i, D.F_FLAGS]
    if hdr < 0 or hdr > 0xFFFF or win < 0 or win > 0xFFFF or fl < 0 or fl > 0xFF:
        return False
    it = P[i, D.F_ICMPT]
    ic = P[i, D.F_ICMPC]
    return -1 <= it <= 255 and -1 <= ic <= 255


@njit(cache=True, inline="always")
def _plant(seed, f, P, i, d, fwd_is_a, at):
    """Keep packet ``i`` (direction ``d``) in flow ``f``'s seed words from ``at``."""
    seed[f, at + SD_TS] = P[i, D.F_TS]
    seed[f, at + SD_LEN] = P[i, D.F_PAY] | (P[i, D.F_WIRELEN] << 32)
    seed[f, at + SD_MISC] = (
        P[i, D.F_HDR]
        | (P[i, D.F_WIN] << 16)
        | (P[i, D.F_FLAGS] << 32)
        | ((P[i, D.F_ICMPT] + 1) << 40)
        | ((P[i, D.F_ICMPC] + 1) << 49)
        | (np.int64(d) << 58)
        | (np.int64(1 if fwd_is_a else 0) << 59)
    )


@njit(cache=True)
def _plant_dns(seed, f, DS, st, P, i, PE, buf, pool, second, hist):
    """Keep what DNS packet ``i`` adds to flow ``f`` (a seed) in its row of ``DS``, as
    the ``second`` packet of the seed or its first; a seed without a row gets the next
    (the caller made sure one is free). Its query name goes to the pool now."""
    x = seed[f, SD_DNS]
    if x < 0:
        x = st[ST_DSEEDS]
        st[ST_DSEEDS] += 1
        seed[f, SD_DNS] = x
        for k in range(NDS):
            DS[x, k] = 0.0
    b = NDS_PACKET if second else 0
    first_name = not second or ((np.int64(DS[x, DS_CODE]) >> DC_NAME_SHIFT) & 3) == 0
    code, poff, ent = _dns_measure(P, i, buf, pool, st, first_name, hist)
    DS[x, b + DS_CODE] = code
    DS[x, b + DS_POFF] = poff
    DS[x, b + DS_PE] = PE[i]
    DS[x, b + DS_ENT] = ent


@njit(cache=True, inline="always")
def _replay(S, r, seed, f, at, pr, activity, status1, DN, DS, dn_row):
    """Add the packet kept in flow ``f``'s seed words from ``at`` to row ``r`` (its DNS
    from ``DS``, into row ``dn_row`` of ``DN`` when the flow has none yet); return
    whether it took that row."""
    m = seed[f, at + SD_MISC]
    n = seed[f, at + SD_LEN]
    _packet(
        S,
        r,
        status1,
        0,
        (m >> 58) & 1,
        seed[f, at + SD_TS],
        n & 0xFFFFFFFF,
        pr,
        (n >> 32) & 0xFFFFFFFF,
        m & 0xFFFF,
        (m >> 16) & 0xFFFF,
        (m >> 32) & 0xFF,
        ((m >> 40) & 0x1FF) - 1,
        ((m >> 49) & 0x1FF) - 1,
        activity,
    )
    x = seed[f, SD_DNS]
    if x < 0 or at == SD_THIRD:  # a third packet has no DNS
        return False
    b = NDS_PACKET if at == SD_SECOND else 0
    code = np.int64(DS[x, b + DS_CODE])
    if (code & DC_DNS) == 0:
        return False
    L = float(n & 0xFFFFFFFF)
    poff = np.int64(DS[x, b + DS_POFF])
    return _dns_apply(S, r, DN, dn_row, code, poff, DS[x, b + DS_PE], DS[x, b + DS_ENT], L)


@njit(cache=True)
def _grow_seed(S, r, seed, f, kind, pr, activity, status1, DN, DS, dn_row):
    """Write into row ``r`` of ``S`` what flow ``f``'s row would hold (a seed of ``kind``),
    its DNS into row ``dn_row`` of ``DN``; return whether it has DNS (so took that row).

    The same code as for a flow that had a row from its first packet, in the same order
    (packets, cuts), so the same bits; ``status1`` is scratch (what the packets do to the
    flow's status was done when they were planted).
    """
    _init_row(S, r, ((seed[f, SD_MISC] >> 59) & 1) != 0)
    made = _replay(S, r, seed, f, 0, pr, activity, status1, DN, DS, dn_row)
    if kind == SEED_CUT:
        _rebase_row(S, r, DN)
    if kind <= SEED2:
        if _replay(S, r, seed, f, SD_SECOND, pr, activity, status1, DN, DS, dn_row):
            made = True
        if kind == SEED2_CUT:
            _rebase_row(S, r, DN)
    if kind <= SEED3:
        _replay(S, r, seed, f, SD_THIRD, pr, activity, status1, DN, DS, dn_row)
        if kind == SEED3_CUT:
            _rebase_row(S, r, DN)
    return made


@njit(cache=True, inline="always")
def _closes(seed, f, fl, d):
    """Whether a TCP packet with flags ``fl`` in direction ``d`` closes the one-packet seed
    of flow ``f`` (as :func:`_packet` decides: a RST, or FINs both ways)."""
    m = seed[f, SD_MISC]
    fin_first = ((m >> 32) & 1) != 0
    return (fl & 4) != 0 or ((fl & 1) != 0 and fin_first and ((m >> 58) & 1) != d)


@njit(cache=True, inline="always")
def _rebase_row(S, r, DN):
    """Start a new slice of the flow in row ``r`` (its interim record was emitted)."""
    for d in range(2):
        S[r, S_B_PKTS + d] = S[r, S_FLEN + 6 * d + ST_N]
        S[r, S_B_BYTES + d] = S[r, S_FLEN + 6 * d + ST_SUM]
        S[r, S_B_WIRE + d] = S[r, S_FWD_WIRE] if d == 0 else S[r, S_BYTES] - S[r, S_FWD_WIRE]
        S[r, S_B_SYN + d] = S[r, S_SYN + d]
        S[r, S_B_FIN + d] = S[r, S_FIN + d]
        S[r, S_B_RST + d] = S[r, S_RST + d]
        S[r, S_B_PSH + d] = S[r, S_FWD_PSH + d]
    S[r, S_B_ACK] = S[r, S_FLAG + 4]
    S[r, S_SL_FIRST] = -1.0
    S[r, S_SL_SEQ] += 1.0
    q = np.int64(S[r, S_DNS_SLOT])
    if q < 0:
        return
    DN[q, D_B_Q] = S[r, S_DNS_Q]
    DN[q, D_B_NX] = S[r, S_DNS_NX]
    for k in range(D_RBYTES + 1):
        DN[q, D_B_QNAMED + k] = DN[q, k]
    for k in range(HLL_NAMES_COLS):
        DN[q, D_HLL_SLICE + k] = 0.0
    DN[q, D_SL_QLEN_MAX] = 0.0


@njit(cache=True, inline="always")
def _claim_row(srow, owner, st, f):
    """Give flow ``f`` the next free row of ``S`` (the caller made sure there is one)."""
    r = st[ST_SROWS]
    st[ST_SROWS] += 1
    srow[f] = r
    owner[r] = f
    return r


@njit(cache=True, inline="always")
def _take_row(S, srow, seed, owner, st, f, pr, activity, DN, DS, status1):
    """Give seed flow ``f`` a row of ``S``, rebuilt from its packets (its DNS into the
    next row of ``DN``: the caller made sure one is free); return it."""
    kind = srow[f]
    r = _claim_row(srow, owner, st, f)
    if _grow_seed(S, r, seed, f, kind, pr, activity, status1, DN, DS, st[ST_DNS]):
        st[ST_DNS] += 1
    seed[f, SD_DNS] = -1  # its row of DS is let go at the next compaction
    return r


@njit(cache=True, nogil=True)
def process_packets(
    P, PE, buf, K, S, status, table, pool, st, params, start, links, lru, DN, srow, seed, owner, DS
):
    """Add the decodable packets of ``P[start:]`` to their flows; return where it stopped.

    Stops early (returning the index of the packet not yet added) when a new flow
    would exceed the flow arrays or half the hash table: the caller grows them and
    calls again; when every row of ``S`` is in use (``st[ST_STOP]`` = STOP_SROWS: the
    caller grows it); before a DNS packet when ``DN`` (the per-query DNS statistics) or
    ``DS`` (the DNS of seeds) has no free row, and before any packet when ``DN`` has none
    while seeds have DNS (STOP_DNS_FULL: the caller grows them); or, with interim records
    (``params[P_SLICE]``), at the first packet at or after the next slice boundary
    (STOP_BOUNDARY): the caller cuts the open flows there (:func:`pending_slices`,
    :func:`rebase`) and calls again. ``st``: the ``ST_*`` fields; ``links``/``lru``: the
    least-recently-active and closed lists (``LK_*``, ``L_*``); ``srow``/``seed``/
    ``owner``/``DS``: see Seeds above.
    """
    mask = len(table) - 1
    tkey = st[ST_TKEY]
    nflows = st[0]
    slice_us = np.int64(params[P_SLICE])
    seeds = params[P_SEEDS] > 0
    activity = params[P_ACTIVITY]
    hist = np.zeros(256, dtype=np.int64)  # per-query entropy scratch, left all zero
    status1 = np.zeros(1, dtype=np.int8)
    for i in range(start, P.shape[0]):
        if P[i, D.F_STATUS] != D.ST_OK:
            continue
        ts = P[i, D.F_TS]
        if slice_us > 0:
            if st[ST_BOUNDARY] < 0:
                st[ST_BOUNDARY] = (ts // slice_us + 1) * slice_us
            elif ts >= st[ST_BOUNDARY]:
                st[0] = nflows
                st[ST_STOP] = STOP_BOUNDARY
                return i
        dns = P[i, D.F_DNS] >= 0
        if (
            (dns or st[ST_DSEEDS] > 0)  # a seed with DNS that gets its row needs one
            and st[ST_DNS] >= DN.shape[0]
            or dns
            and st[ST_DSEEDS] >= DS.shape[0]
        ):
            st[0] = nflows
            st[ST_STOP] = STOP_DNS_FULL
            return i
        if st[ST_SROWS] >= S.shape[0]:
            st[0] = nflows
            st[ST_STOP] = STOP_SROWS
            return i
        if ts > st[2]:
            st[2] = ts
        shi = P[i, D.F_SHI]
        slo = P[i, D.F_SLO]
        dhi = P[i, D.F_DHI]
        dlo = P[i, D.F_DLO]
        pr = P[i, D.F_PROTO]
        sp = P[i, D.F_SPORT]
        dp = P[i, D.F_DPORT]
        aux = np.int64(0)
        if pr == 1 or pr == 58:
            sp = 0
            dp = 0
            aux = P[i, D.F_ICMPID]
            if aux == 0:
                aux = (np.int64(2) << 20) | (P[i, D.F_ICMPT] << 8) | P[i, D.F_ICMPC]
        src_is_a = shi < dhi or (shi == dhi and (slo < dlo or (slo == dlo and sp <= dp)))
        if src_is_a:
            ahi, alo, ap, bhi, blo, bp = shi, slo, sp, dhi, dlo, dp
        else:
            ahi, alo, ap, bhi, blo, bp = dhi, dlo, dp, shi, slo, sp
        h = _hash(ahi, alo, bhi, blo, ap, bp, pr, aux, tkey) & mask
        while True:
            f = table[h]
            if f == -1:
                break
            if (
                K[f, K_AHI] == ahi
                and K[f, K_ALO] == alo
                and K[f, K_BHI] == bhi
                and K[f, K_BLO] == blo
                and K[f, K_APORT] == ap
                and K[f, K_BPORT] == bp
                and K[f, K_PROTO] == pr
                and K[f, K_AUX] == aux
            ):
                break
            h = (h + 1) & mask
        f = table[h]
        if (
            f != -1
            and status[f] != FLOW_DONE
            and _expired(S, srow, seed, status, f, float(ts), P[i, D.F_FLAGS], params)
        ):
            _close(S, srow, status, f, links, lru)
        if f == -1 or status[f] == FLOW_DONE:
            if nflows >= len(status) or 2 * (nflows + 1) > len(table):
                st[0] = nflows
                return i
            if lru[L_CAP] > 0 and lru[L_LIVE] >= lru[L_CAP]:
                # full: flows that have timed out end first (as at the end of a chunk)
                _end_timed_out(S, srow, seed, status, nflows, float(st[2]), params, links, lru)
                while lru[L_LIVE] >= lru[L_CAP] and lru[L_HEAD] >= 0:
                    # the least recently active
                    _close(S, srow, status, lru[L_HEAD], links, lru)
                    lru[L_EVICTED] += 1
            f = nflows
            nflows += 1
            # The client is the sender of the first packet, unless that packet is a
            # SYN-ACK (handshake reordered or SYN not captured): then its receiver.
            client_is_a = src_is_a
            if pr == 6 and (P[i, D.F_FLAGS] & 0x12) == 0x12:
                client_is_a = not src_is_a
            _set_key(K, f, ahi, alo, bhi, blo, ap, bp, pr, aux)
            status[f] = FLOW_OPEN
            table[h] = f
            links[f, LK_CPRV] = -1  # rows are not cleared when made or freed
            links[f, LK_CNXT] = -1
            _append(links, lru, f, 0)
            lru[L_LIVE] += 1
            if seeds and _seedable(P, i):
                _plant(seed, f, P, i, 0 if client_is_a == src_is_a else 1, client_is_a, 0)
                srow[f] = SEED
                seed[f, SD_DNS] = -1
                if dns:
                    _plant_dns(seed, f, DS, st, P, i, PE, buf, pool, False, hist)
                if pr == 6 and (P[i, D.F_FLAGS] & 4) != 0:  # as _packet would have it
                    status[f] = FLOW_CLOSED
                    _append(links, lru, f, 2)
                continue
            _init_row(S, _claim_row(srow, owner, st, f), client_is_a)
        elif lru[L_TAIL] != f:
            _unlink(links, lru, f, 0)
            _append(links, lru, f, 0)
        r = srow[f]
        if r == SEED and seeds and _seedable(P, i):  # a second packet: still a seed
            fwd_is_a = ((seed[f, SD_MISC] >> 59) & 1) != 0
            d = 0 if fwd_is_a == src_is_a else 1
            was_closed = status[f] == FLOW_CLOSED
            if pr == 6 and _closes(seed, f, P[i, D.F_FLAGS], d):
                status[f] = FLOW_CLOSED
            _plant(seed, f, P, i, d, fwd_is_a, SD_SECOND)
            if dns:
                _plant_dns(seed, f, DS, st, P, i, PE, buf, pool, True, hist)
            srow[f] = SEED2
            if was_closed:
                _unlink(links, lru, f, 2)
            if status[f] == FLOW_CLOSED:
                _append(links, lru, f, 2)
            continue
        if (
            r == SEED2
            and seeds
            and not dns
            and status[f] == FLOW_OPEN
            and (pr != 6 or (P[i, D.F_FLAGS] & 5) == 0)  # no FIN or RST: it stays open
            and _seedable(P, i)
        ):  # a third packet that changes nothing but the accumulators: still a seed
            fwd_is_a = ((seed[f, SD_MISC] >> 59) & 1) != 0
            _plant(seed, f, P, i, 0 if fwd_is_a == src_is_a else 1, fwd_is_a, SD_THIRD)
            srow[f] = SEED3
            continue
        if r < 0:
            r = _take_row(S, srow, seed, owner, st, f, pr, activity, DN, DS, status1)
        fwd_is_a = S[r, S_FWD_IS_A] != 0.0
        d = 0 if fwd_is_a == src_is_a else 1
        was_closed = status[f] == FLOW_CLOSED
        _update(S, r, status, f, d, P, PE, i, buf, pool, st, params, hist, DN)
        if was_closed:
            _unlink(links, lru, f, 2)
        if status[f] == FLOW_CLOSED:
            _append(links, lru, f, 2)
    st[0] = nflows
    return P.shape[0]


@njit(cache=True, nogil=True)
def expire(S, srow, seed, status, nflows, now, params, everything, links, lru):
    """Close flows that no later packet can join (or all of them)."""
    for f in range(nflows):
        s = status[f]
        if s != FLOW_OPEN and s != FLOW_CLOSED:
            continue
        last = _ts(S, srow, seed, f, S_LAST_TS)
        if (
            everything
            or now - last > params[P_IDLE]
            or now - _ts(S, srow, seed, f, S_FIRST_TS) > params[P_ACTIVE]
            or (s == FLOW_CLOSED and now - last > params[P_GRACE])
        ):
            _close(S, srow, status, f, links, lru)


@njit(cache=True, inline="always")
def _in_slice(S, srow, f):
    """Whether flow ``f`` has packets since its last cut (or since it began)."""
    r = srow[f]
    if r >= 0:
        return S[r, S_SL_FIRST] >= 0
    return r in (SEED, SEED2, SEED3)


@njit(cache=True)
def pending_slices(S, srow, status, nflows):
    """Rows of the open flows with packets since their last cut (or since they began)."""
    m = 0
    for f in range(nflows):
        if (status[f] == FLOW_OPEN or status[f] == FLOW_CLOSED) and _in_slice(S, srow, f):
            m += 1
    out = np.empty(m, dtype=np.int64)
    m = 0
    for f in range(nflows):
        if (status[f] == FLOW_OPEN or status[f] == FLOW_CLOSED) and _in_slice(S, srow, f):
            out[m] = f
            m += 1
    return out


@njit(cache=True)
def rebase(S, srow, rows, DN):
    """Start a new slice of each flow in ``rows`` (its interim record was emitted)."""
    for f in rows:
        r = srow[f]
        if r >= 0:
            _rebase_row(S, r, DN)
        elif r == SEED:
            srow[f] = SEED_CUT
        elif r == SEED2:
            srow[f] = SEED2_CUT
        elif r == SEED3:
            srow[f] = SEED3_CUT


@njit(cache=True, nogil=True)
def gather(S, srow, seed, K, status, rows, params, out, DN, DS, out_dns):
    """Write the accumulator row of each flow of ``rows`` to ``out`` (seeds rebuilt, and
    ended as :func:`_close` ends a row when the flow has ended), its row of DNS
    statistics to the same row of ``out_dns`` (and ``S_DNS_SLOT`` of ``out`` says that
    row, -1 without DNS; ``out_dns`` may have no rows when no flow has DNS)."""
    status1 = np.zeros(1, dtype=np.int8)
    for k in range(len(rows)):
        f = rows[k]
        r = srow[f]
        if r >= 0:
            for c in range(NS):
                out[k, c] = S[r, c]
            q = np.int64(S[r, S_DNS_SLOT])
            if q >= 0:
                for c in range(ND):
                    out_dns[k, c] = DN[q, c]
                out[k, S_DNS_SLOT] = k
        else:
            pr = K[f, K_PROTO]
            _grow_seed(out, k, seed, f, r, pr, params[P_ACTIVITY], status1, out_dns, DS, k)
            if status[f] == FLOW_DONE:
                _end_row(out, k)


@njit(cache=True)
def last_times(S, srow, seed, nflows):
    """The latest packet time of each flow."""
    out = np.empty(nflows, dtype=np.float64)
    for f in range(nflows):
        out[f] = _ts(S, srow, seed, f, S_LAST_TS)
    return out


@njit(cache=True, nogil=True)
def compact(K, S, status, nflows, pool, pool2, links, lru, srow, seed, owner, nrows, DS):
    """Move the open flows and their rows of ``S`` to the front (in place), their query
    names (those of seeds' DNS in ``DS`` too) into ``pool2``.

    Returns (open flows, bytes of ``pool2`` used, rows of ``S`` in use). Rows of ``S``
    keep their order (a row only ever moves towards the front).
    """
    moved = np.full(nflows, -1, dtype=np.int64)
    m = 0
    for f in range(nflows):
        s = status[f]
        if s != FLOW_OPEN and s != FLOW_CLOSED:
            continue
        moved[f] = m
        m += 1
    ms = 0
    for r in range(nrows):
        f = owner[r]
        if moved[f] < 0:
            continue
        if ms != r:
            for k in range(NS):
                S[ms, k] = S[r, k]
        owner[ms] = moved[f]
        srow[f] = ms
        ms += 1
    m = 0
    used = 0
    for f in range(nflows):
        s = status[f]
        if s != FLOW_OPEN and s != FLOW_CLOSED:
            continue
        if m != f:
            for k in range(NK):
                K[m, k] = K[f, k]
            status[m] = s
            for k in range(NLK):
                links[m, k] = links[f, k]
            srow[m] = srow[f]
            for k in range(NSD):
                seed[m, k] = seed[f, k]
        r = srow[m]
        if r >= 0:
            ln = np.int64(S[r, S_QPOOL_LEN])
            if ln > 0:
                off = np.int64(S[r, S_QPOOL_OFF])
                for k in range(ln):
                    pool2[used + k] = pool[off + k]
                S[r, S_QPOOL_OFF] = used
                used += ln
        elif seed[m, SD_DNS] >= 0:
            x = seed[m, SD_DNS]
            for b in range(0, NDS, NDS_PACKET):
                code = np.int64(DS[x, b + DS_CODE])
                if ((code >> DC_NAME_SHIFT) & 3) == DC_NAME_KEPT:
                    ln = (code >> DC_NAME_LEN) & 511
                    off = np.int64(DS[x, b + DS_POFF])
                    for k in range(ln):
                        pool2[used + k] = pool[off + k]
                    DS[x, b + DS_POFF] = used
                    used += ln
        m += 1
    for f in range(m, nflows):
        status[f] = FLOW_FREE
        for k in range(NLK):
            links[f, k] = -1
    for f in range(m):
        for k in range(NLK):
            if links[f, k] >= 0:
                links[f, k] = moved[links[f, k]]
    for k in (L_HEAD, L_TAIL, L_CHEAD, L_CTAIL):
        if lru[k] >= 0:
            lru[k] = moved[lru[k]]
    lru[L_OLDEST] = 0
    return m, used, ms


@njit(cache=True)
def _to_front(T, slots):
    """Move rows ``slots`` (distinct) of ``T`` to its front, keeping their order; return
    each one's new row. In place: a row only ever moves towards the front."""
    order = np.argsort(slots)
    new = np.empty_like(slots)
    for k in range(len(slots)):
        j = order[k]
        old = slots[j]
        if old != k:
            for c in range(T.shape[1]):
                T[k, c] = T[old, c]
        new[j] = k
    return new


@njit(cache=True)
def compact_dns(S, nrows, DN):
    """Move the DNS rows of rows ``0 .. nrows-1`` of ``S`` to the front of ``DN``; return
    how many."""
    m = 0
    for f in range(nrows):
        if S[f, S_DNS_SLOT] >= 0:
            m += 1
    slots = np.empty(m, dtype=np.int64)
    owners = np.empty(m, dtype=np.int64)
    m = 0
    for f in range(nrows):
        if S[f, S_DNS_SLOT] >= 0:
            slots[m] = np.int64(S[f, S_DNS_SLOT])
            owners[m] = f
            m += 1
    new = _to_front(DN, slots)
    for j in range(m):
        S[owners[j], S_DNS_SLOT] = new[j]
    return m


@njit(cache=True)
def compact_dns_seeds(srow, seed, nflows, DS):
    """Move the rows of ``DS`` that seeds of flows ``0 .. nflows-1`` use to its front;
    return how many."""
    m = 0
    for f in range(nflows):
        if srow[f] < 0 and seed[f, SD_DNS] >= 0:
            m += 1
    owners = np.empty(m, dtype=np.int64)
    m = 0
    for f in range(nflows):
        if srow[f] < 0 and seed[f, SD_DNS] >= 0:
            owners[m] = f
            m += 1
    seed[owners, SD_DNS] = _to_front(DS, seed[owners, SD_DNS])
    return m


@njit(cache=True)
def link_in_order(order, closed, links, lru):
    """Build both lists from rows in order, least recent first (the ``closed`` rows too)."""
    for k in (L_HEAD, L_TAIL, L_CHEAD, L_CTAIL):
        lru[k] = -1
    for f in order:
        _append(links, lru, f, 0)
    for f in closed:
        _append(links, lru, f, 2)
    lru[L_LIVE] = len(order)
    lru[L_OLDEST] = 0


@njit(cache=True)
def list_order(links, lru, n, c):
    """Return the rows of a list (``c`` as in :func:`_unlink`), least recent first."""
    out = np.empty(n, dtype=np.int64)
    f = lru[L_HEAD + 5 * (c // 2)]
    k = 0
    while f >= 0 and k < n:
        out[k] = f
        k += 1
        f = links[f, LK_NXT + c]
    return out[:k]


def _by_time(last: np.ndarray, status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both list orders rebuilt from last packet times (ties: row order)."""
    order = np.argsort(last, kind="stable").astype(np.int64)
    return order, order[status[order] == FLOW_CLOSED]


def _pow2(n: int) -> int:
    return 1 << max(4, int(n - 1).bit_length())


# Rows beyond the cap: flows that ended within one chunk wait in their rows until the
# chunk is harvested; a chunk of the capture reader holds at most 32768 packets.
_SPARE_ROWS = 1 << 15
EMIT_ROWS = 8192  # finished flows handed out at a time (see FlowTable.add)


@dataclass
class FinishedFlows:
    """Accumulator rows of records to hand out, with their keys and query-name pool.

    ``kind`` (``REC_*`` per row; None: every row a whole flow) says what each row
    stands for: a flow never cut at a window boundary, an interim slice of an open flow,
    the last slice of a cut flow, or the whole of a cut flow.
    """

    K: np.ndarray
    S: np.ndarray
    pool: np.ndarray
    kind: np.ndarray | None = None
    D: np.ndarray | None = None  # each record's per-query DNS row (None: no DNS at all)

    def __len__(self) -> int:
        return int(self.K.shape[0])

    def kinds(self) -> np.ndarray:
        if self.kind is None:
            return np.zeros(len(self), dtype=np.uint8)
        return self.kind

    def parts(self, rows: int) -> list[FinishedFlows]:
        """Split into pieces of at most ``rows`` records (to bound feature memory)."""
        if len(self) <= rows:
            return [self]
        return [
            FinishedFlows(
                self.K[i : i + rows],
                self.S[i : i + rows],
                self.pool,
                None if self.kind is None else self.kind[i : i + rows],
                None if self.D is None else self.D[i : i + rows],
            )
            for i in range(0, len(self), rows)
        ]

    def dns(self) -> np.ndarray:
        """Each record's per-query DNS statistics (``D_*`` columns; zeros without DNS)."""
        if self.D is None:
            return np.zeros((len(self), ND))
        return self.D

    @staticmethod
    def concat(parts: list[FinishedFlows]) -> FinishedFlows:
        """Join pieces (each with its own name pool) into one."""
        parts = [p for p in parts if len(p)] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        S = np.concatenate([p.S for p in parts])
        base = 0
        at = 0
        for p in parts:
            rows = S[at : at + len(p)]
            named = rows[:, S_QPOOL_LEN] > 0
            rows[named, S_QPOOL_OFF] += base
            base += len(p.pool)
            at += len(p)
        kind = None
        if any(p.kind is not None for p in parts):
            kind = np.concatenate([p.kinds() for p in parts])
        dns = None
        if any(p.D is not None for p in parts):
            dns = np.concatenate([p.dns() for p in parts])
        return FinishedFlows(
            np.concatenate([p.K for p in parts]),
            S,
            np.concatenate([p.pool for p in parts]),
            kind,
            dns,
        )


def _ended(cut: np.ndarray, since: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Records of the ended flows in ``rows``: (flow of each record, its kind).

    ``cut``/``since``: whether each flow was ever cut, and has packets since its last
    cut. A flow never cut is one ``REC_FLOW`` record; a cut flow
    is its whole (``REC_WHOLE``, in the flow's place, so whole flows keep their order)
    and, when it had packets since its last cut, its last slice (``REC_TAIL``, after all
    the others).
    """
    if not cut.any():
        return rows, np.zeros(len(rows), dtype=np.uint8)
    tail = rows[cut & since]
    kind = np.where(cut, REC_WHOLE, REC_FLOW).astype(np.uint8)
    return (
        np.concatenate([rows, tail]),
        np.concatenate([kind, np.full(len(tail), REC_TAIL, dtype=np.uint8)]),
    )


class FlowTable:
    """Open flows of one capture series; feed it packet chunks, collect finished flows.

    ``max_open`` caps the open flows (0: no cap); :attr:`evicted` counts the flows
    ended early to respect it. ``slice_s`` > 0 cuts the flows still open at every
    multiple of ``slice_s`` seconds since the epoch (the window boundaries) into interim
    records (``REC_SLICE``); a flow that was cut ends as its last slice and its whole.
    ``seeds`` (default :data:`SEEDS`) keeps flows of up to three packets without a row of
    accumulators (see Seeds above); the flows and records are the same either way.
    ``sketch_key`` keys the hash of the distinct-name sketches (``ST_KEY``).
    """

    def __init__(
        self,
        idle_s: float,
        active_s: float,
        activity_s: float,
        grace_s: float,
        max_open: float = 0,
        slice_s: float = 0.0,
        *,
        seeds: bool | None = None,
        sketch_key: int = 0,
    ) -> None:
        self.params, self.max_open = _settings(
            idle_s, active_s, activity_s, grace_s, max_open, slice_s, seeds=seeds
        )
        self._alloc(0)
        self._alloc_rows(0)
        self.pool = np.zeros(POOL_BYTES, dtype=np.uint8)
        self.pool2 = np.zeros(POOL_BYTES, dtype=np.uint8)
        self.table = np.zeros(0, dtype=np.int64)
        tkey = secrets.randbits(64) - (1 << 63)
        self.st = np.array([0, 0, 0, -1, 0, 0, 0, 0, sketch_key, tkey], dtype=np.int64)  # ST_*
        self.DN = np.zeros((0, ND), dtype=np.float64)  # per-query DNS rows (ST_DNS in use)
        self.DS = np.zeros((0, NDS), dtype=np.float64)  # seeds' DNS (ST_DSEEDS in use)
        self.lru = np.array([-1, -1, 0, 0, self.max_open, -1, -1, 0], dtype=np.int64)  # L_*

    @property
    def open_flows(self) -> int:
        return int(self.st[0])

    @property
    def evicted(self) -> int:
        """Flows ended early because the table was full (since this table was made)."""
        return int(self.lru[L_EVICTED])

    def state_bytes(self) -> int:
        """Bytes of the rows in use: the flows' own, their accumulator and DNS rows (the
        seeds' too), and the hash table (what the open flows cost, beyond buffers of fixed
        size)."""
        flows, rows = int(self.st[0]), int(self.st[ST_SROWS])
        per_flow = sum(a.itemsize * int(np.prod(a.shape[1:])) for a in self._arrays())
        per_row = sum(a.itemsize * int(np.prod(a.shape[1:])) for a in self._row_arrays())
        dns = int(self.st[ST_DNS]) * ND * 8 + int(self.st[ST_DSEEDS]) * NDS * 8
        return flows * per_flow + rows * per_row + dns + self.table.nbytes

    def _alloc(self, rows: int) -> None:
        """Allocate the flow arrays (rows beyond those used stay untouched, so unpaid)."""
        self._K = np.empty((rows, NK), dtype=np.int64)
        self._status = np.zeros(rows, dtype=np.int8)
        self._links = np.empty((rows, NLK), dtype=np.int64)  # set when a flow is made
        self._srow = np.empty(rows, dtype=np.int64)  # set when a flow is made
        self._seed = np.empty((rows, NSD), dtype=np.int64)
        self._view(rows)

    def _view(self, rows: int) -> None:
        self.K, self.status = self._K[:rows], self._status[:rows]
        self.links, self.srow, self.seed = self._links[:rows], self._srow[:rows], self._seed[:rows]

    def _alloc_rows(self, rows: int) -> None:
        """Allocate the accumulator rows (untouched rows stay unpaid)."""
        self._S = np.empty((rows, NS), dtype=np.float64)
        self._owner = np.empty(rows, dtype=np.int64)
        self._view_rows(rows)

    def _view_rows(self, rows: int) -> None:
        self.S, self.owner = self._S[:rows], self._owner[:rows]

    def _reserve(self, need: int) -> None:
        """Room for ``need`` flows."""
        if need <= len(self.status):
            return
        grown = self._grown(need, int(self.st[0]), len(self._status), self._arrays, self._alloc)
        self._view(grown)

    def _reserve_rows(self, need: int) -> None:
        """Room for ``need`` rows of accumulators."""
        if need <= len(self.S):
            return
        n = int(self.st[ST_SROWS])
        self._view_rows(self._grown(need, n, len(self._S), self._row_arrays, self._alloc_rows))

    def _grown(
        self,
        need: int,
        used: int,
        have: int,
        arrays: Callable[[], list[np.ndarray]],
        alloc: Callable[[int], None],
    ) -> int:
        """Grow one set of arrays (``used`` rows kept) for ``need``; return the rows to view."""
        rows = max(need + need // 4, 1 << 12)  # modest growth: this is most of our memory
        # With a cap the arrays are made once at their largest size: pages are only paid
        # for when a row is first used, and growing never copies.
        size = max(self.max_open, used) + _SPARE_ROWS if self.max_open else rows
        if not self.max_open or have < size:
            old = arrays()
            alloc(size)
            for new, was in zip(arrays(), old, strict=True):
                new[:used] = was[:used]
        return min(rows, len(arrays()[0]))

    def _arrays(self) -> list[np.ndarray]:
        return [self._K, self._status, self._links, self._srow, self._seed]

    def _row_arrays(self) -> list[np.ndarray]:
        return [self._S, self._owner]

    def _index(self) -> None:
        """(Re)build the hash table over the open flows, sized for the flow arrays."""
        size = _pow2(2 * len(self.status) + 2)
        if len(self.table) < size or len(self.table) > 4 * size:
            self.table = np.empty(size, dtype=np.int64)
        rebuild_table(self.K, self.status, int(self.st[0]), self.table, self.st[ST_TKEY])

    def add(
        self,
        P: np.ndarray,
        PE: np.ndarray,
        buf: np.ndarray,
        emit: Callable[[FinishedFlows], None] | None = None,
    ) -> FinishedFlows:
        """Add one chunk of packets; return the flows that are certainly finished.

        With ``emit``, finished flows are handed to it instead, in pieces of at most
        :data:`EMIT_ROWS` (a flood ends tens of thousands of flows per chunk: copied
        out all at once they would cost as much memory again as a tenth of the table),
        and an empty :class:`FinishedFlows` is returned.
        """
        n = P.shape[0]
        # Room for the open flows and a guess at the new ones; grown on demand, so
        # memory follows the number of flows, not the chunk size.
        self._reserve(int(self.st[0]) + n // 8 + 1024)
        self._reserve_rows(int(self.st[ST_SROWS]) + 1024)
        self._index()
        parts = []
        i = 0
        while True:
            i = process_packets(
                P,
                PE,
                buf,
                self.K,
                self.S,
                self.status,
                self.table,
                self.pool,
                self.st,
                self.params,
                i,
                self.links,
                self.lru,
                self.DN,
                self.srow,
                self.seed,
                self.owner,
                self.DS,
            )
            if i >= n:
                break
            stop, self.st[ST_STOP] = self.st[ST_STOP], 0
            if stop == STOP_BOUNDARY:
                parts.extend(self._cut(int(P[i, D.F_TS]), emit))
                continue
            if stop == STOP_DNS_FULL:
                self._grow_dns()
                continue
            if stop == STOP_SROWS:
                if self.max_open and len(self.S) == len(self._S):
                    parts.append(self._harvest(emit))  # every row in use: free the ended
                    self._index()
                self._reserve_rows(int(self.st[ST_SROWS]) + max(1024, (n - i) // 4))
                continue
            if self.max_open and len(self.status) == len(self._status):
                # every row in use (open flows plus flows ended in this chunk): hand the
                # ended ones out now to free their rows
                parts.append(self._harvest(emit))
            self._reserve(int(self.st[0]) + max(1024, (n - i) // 4))
            self._index()
        self._expire(False)
        parts.append(self._harvest(emit))
        return FinishedFlows.concat(parts)

    def _grow_dns(self) -> None:
        """Room for more DNS rows: DN's or DS's, whichever is full (rows are cleared when
        taken, so they are not here)."""
        for name, used in (("DN", int(self.st[ST_DNS])), ("DS", int(self.st[ST_DSEEDS]))):
            old = getattr(self, name)
            if used < len(old):
                continue
            grown = np.empty((max(1024, 2 * len(old)), old.shape[1]), dtype=np.float64)
            grown[:used] = old[:used]
            setattr(self, name, grown)

    def _pool_for(self, flows: np.ndarray) -> np.ndarray:
        """A copy of the name pool for records of ``flows`` (empty when none has a name:
        only flows with rows, or seeds with DNS, can)."""
        r = self.srow[flows]
        rows = r[r >= 0]
        if (self.S[rows, S_QPOOL_LEN] > 0).any() or (self.seed[flows[r < 0], SD_DNS] >= 0).any():
            return self.pool[: int(self.st[1])].copy()
        return self.pool[:0].copy()

    def _records(self, flows: np.ndarray, pool: np.ndarray, kind: np.ndarray) -> FinishedFlows:
        """Copy out the records of ``flows`` (accumulators, keys and DNS rows)."""
        S = np.empty((len(flows), NS), dtype=np.float64)
        maybe_dns = int(self.st[ST_DNS]) or int(self.st[ST_DSEEDS])
        dns = np.zeros((len(flows) if maybe_dns else 0, ND), dtype=np.float64)
        gather(
            self.S,
            self.srow,
            self.seed,
            self.K,
            self.status,
            flows,
            self.params,
            S,
            self.DN,
            self.DS,
            dns,
        )
        has = maybe_dns and bool((S[:, S_DNS_SLOT] >= 0).any())
        return FinishedFlows(self.K[flows], S, pool, kind, dns if has else None)

    def _record_kinds(self, flows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_ended` for ``flows``. A seed that was cut has no packet since (its next
        packet gives it a row)."""
        r = self.srow[flows]
        cut = np.isin(r, (SEED_CUT, SEED2_CUT, SEED3_CUT))
        since = np.zeros(len(flows), dtype=bool)
        has = r >= 0
        if has.any():
            cut[has] = self.S[r[has], S_SL_SEQ] > 0
            since[has] = self.S[r[has], S_SL_FIRST] >= 0
        return _ended(cut, since, flows)

    def _cut(self, ts: int, emit: Callable[[FinishedFlows], None] | None) -> list[FinishedFlows]:
        """Cut the open flows at the boundary that the packet at ``ts`` crossed.

        Flows that no packet at ``ts`` could join end first (as they would at a chunk
        end), so where chunks are cut never changes which flows are sliced. Each open
        flow with packets since its last cut is handed out as an interim record, then
        starts a new slice. Returns the records when there is no ``emit``.
        """
        n = int(self.st[0])
        expire(
            self.S,
            self.srow,
            self.seed,
            self.status,
            n,
            float(ts),
            self.params,
            False,
            self.links,
            self.lru,
        )
        rows = pending_slices(self.S, self.srow, self.status, n)
        out: list[FinishedFlows] = []
        if len(rows):
            pool = self._pool_for(rows)
            for at in range(0, len(rows), EMIT_ROWS):
                part = rows[at : at + EMIT_ROWS]
                rec = self._records(part, pool, np.full(len(part), REC_SLICE, np.uint8))
                if emit is not None:
                    emit(rec)
                else:
                    out.append(rec)
            rebase(self.S, self.srow, rows, self.DN)
        step = int(self.params[P_SLICE])
        self.st[ST_BOUNDARY] = (ts // step + 1) * step
        return out

    def finish(self, emit: Callable[[FinishedFlows], None] | None = None) -> FinishedFlows:
        """End every open flow (no more packets will come) and let go of the arrays.

        With ``emit``, the records are handed to it in pieces of at most
        :data:`EMIT_ROWS` (as by :meth:`add`: a table at its cap would otherwise copy
        out every record at once) and an empty :class:`FinishedFlows` is returned.
        """
        self._expire(True)
        if emit is None:
            return self._harvest()
        out = self._harvest(emit)
        self._reset()
        return out

    def _reset(self) -> None:
        """No flows, and the flow arrays let go (after every flow was handed out)."""
        self._alloc(0)
        self._alloc_rows(0)
        self.st[ST_DNS] = 0
        self.st[ST_DSEEDS] = 0
        self.DS = np.zeros((0, NDS), dtype=np.float64)
        self.st[ST_SROWS] = 0
        self.st[0] = 0
        self.st[1] = 0
        for k in (L_HEAD, L_TAIL, L_CHEAD, L_CTAIL):
            self.lru[k] = -1
        self.lru[L_LIVE] = self.lru[L_OLDEST] = 0

    def _expire(self, everything: bool) -> None:
        expire(
            self.S,
            self.srow,
            self.seed,
            self.status,
            int(self.st[0]),
            float(self.st[2]),
            self.params,
            everything,
            self.links,
            self.lru,
        )

    def _harvest(self, emit: Callable[[FinishedFlows], None] | None = None) -> FinishedFlows:
        n = int(self.st[0])
        if emit is not None:
            done = np.flatnonzero(self.status[:n] == FLOW_DONE)
            if len(done):
                pool = self._pool_for(done)
                recs, kinds = self._record_kinds(done)
                for at in range(0, len(recs), EMIT_ROWS):
                    emit(self._records(recs[at : at + EMIT_ROWS], pool, kinds[at : at + EMIT_ROWS]))
                self.status[done] = FLOW_FREE
            out = FinishedFlows(self.K[:0].copy(), self.S[:0].copy(), self.pool[:0].copy())
            if len(done) or self.st[1] > POOL_BYTES // 2:
                self._compact()
            return out
        if n and (self.status[:n] == FLOW_DONE).all():
            # everything ended (end of capture): hand out views, no copy (unless some
            # flows were cut, or are seeds, or have their rows out of order)
            pool = self.pool[: int(self.st[1])].copy()
            everyone = np.arange(n)
            recs, kinds = self._record_kinds(everyone)
            in_place = int(self.st[ST_SROWS]) == n and np.array_equal(self.srow[:n], everyone)
            if len(recs) == n and in_place and not int(self.st[ST_DNS]):
                out = FinishedFlows(self.K[:n], self.S[:n], pool, kinds)
            else:
                out = self._records(recs, pool, kinds)
            self._reset()
            return out
        done = np.flatnonzero(self.status[:n] == FLOW_DONE)
        pool = self._pool_for(done)
        recs, kinds = self._record_kinds(done)
        out = self._records(recs, pool, kinds)
        if len(done) or self.st[1] > POOL_BYTES // 2:
            self._compact()
        return out

    def _compact(self) -> None:
        m, used, rows = compact(
            self.K,
            self.S,
            self.status,
            int(self.st[0]),
            self.pool,
            self.pool2,
            self.links,
            self.lru,
            self.srow,
            self.seed,
            self.owner,
            int(self.st[ST_SROWS]),
            self.DS,
        )
        self.pool, self.pool2 = self.pool2, self.pool
        self.st[0] = m
        self.st[1] = used
        self.st[ST_SROWS] = rows
        if self.st[ST_DNS]:
            self.st[ST_DNS] = compact_dns(self.S, rows, self.DN)
        if self.st[ST_DSEEDS]:
            self.st[ST_DSEEDS] = compact_dns_seeds(self.srow, self.seed, m, self.DS)

    # -- carry across rotated files ---------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise the open flows (numpy .npz, no pickle)."""
        bio = io.BytesIO()
        np.savez(bio, **self.state_arrays())  # type: ignore[arg-type]
        return bio.getvalue()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The open flows as named arrays (what :meth:`from_arrays` takes back).

        Only the flows' rows, their accumulator and DNS rows and the names they use;
        seeds stay seeds. The large arrays are views or compact copies, so writing them
        out costs one pass over the state.
        """
        n = int(self.st[0])
        order = list_order(self.links, self.lru, n, 0)
        closed = list_order(self.links, self.lru, n, 2)
        if len(order) != n or len(closed) != (self.status[:n] == FLOW_CLOSED).sum():
            last = last_times(self.S, self.srow, self.seed, n)
            order, closed = _by_time(last, self.status[:n])  # lists damaged: rebuild
        srow = self.srow[:n]
        has_row = srow >= 0
        rows = srow[has_row]
        nrows = int(self.st[ST_SROWS])
        if len(rows) == nrows and np.array_equal(self.owner[rows], np.flatnonzero(has_row)):
            S = self.S[:nrows]  # every row in use is an open flow's (compacted): as they are
        else:
            S = self.S[rows]
            srow = srow.copy()
            srow[has_row] = np.arange(len(rows))
        slots = S[:, S_DNS_SLOT].astype(np.int64)
        has = slots >= 0
        used = int(has.sum())
        if used and (used != self.st[ST_DNS] or slots[has].max() >= used):
            S = S.copy()  # DNS rows of ended flows in between: only the open flows' rows
            S[has, S_DNS_SLOT] = np.arange(used)
            dns = self.DN[slots[has]]
        else:  # compacted already (every chunk ends so): the rows in use, as they are
            dns = self.DN[:used]
        # words a flow never wrote (the arrays are allocated uninitialised): zero, so that no
        # leftover memory goes into carry files and the same open flows give the same bytes
        seed = self.seed[:n].copy()
        seed[has_row] = 0  # a flow with a row: no seed
        seed[has_row, SD_DNS] = -1
        kind = np.where(has_row, 0, srow)
        one = (kind == SEED) | (kind == SEED_CUT)
        seed[one, SD_SECOND : SD_SECOND + 3] = 0
        seed[one | (kind == SEED2) | (kind == SEED2_CUT), SD_THIRD : SD_THIRD + 3] = 0
        x = np.where(srow < 0, seed[:, SD_DNS], -1)
        has = x >= 0
        used = int(has.sum())
        if used and (used != self.st[ST_DSEEDS] or x[has].max() >= used):
            seed[:, SD_DNS] = -1  # rows of ended or grown seeds in between: the open seeds'
            seed[has, SD_DNS] = np.arange(used)
            dns_seeds = self.DS[x[has]]
        else:  # compacted already: as they are
            dns_seeds = self.DS[:used]
        st = self.st.copy()
        st[ST_TKEY] = 0  # never saved (see ST_TKEY)
        st[ST_SROWS] = len(S)
        st[ST_DSEEDS] = used
        return {
            "K": self.K[:n],
            "S": S,
            "status": self.status[:n],
            "srow": srow,
            "seed": seed,
            "dns_seeds": dns_seeds,
            "pool": self.pool[: int(self.st[1])],
            "st": st,
            "params": self.params.copy(),
            "lru": order,
            "closed": closed,
            "dns": dns,
        }

    @classmethod
    def from_bytes(
        cls, data: bytes, *args: float, seeds: bool | None = None, sketch_key: int = 0
    ) -> FlowTable:
        """Restore open flows saved by :meth:`to_bytes`; raise ValueError if malformed."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except Exception as exc:  # np.load raises many types for garbage input
            raise ValueError(f"invalid carry state: {exc}") from exc
        return cls.from_arrays(arrays, *args, seeds=seeds, sketch_key=sketch_key)

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        *args: float,
        seeds: bool | None = None,
        sketch_key: int = 0,
    ) -> FlowTable:
        """Restore open flows saved by :meth:`state_arrays`; raise ValueError if malformed.

        ``args`` are this class's own arguments (timeouts, cap, slice length). The table
        keeps the saved name-sketch key (``ST_KEY``); ``sketch_key`` serves state saved
        before keys (its sketches' registers go on under the new key: a name seen on both
        sides of the upgrade may count twice in that flow's estimate, once).

        The least-recently-active and closed orders are restored too (rebuilt from the
        flows' last packet times for state saved before they were kept), and state saved
        by earlier versions is widened: a flow saved before interim records starts its
        first slice with it; one saved before wire-byte slices starts its next slice's
        wire bytes in proportion to its packets; one saved before seeds has a row.
        """
        K, S, status, srow, seed, pool, st, order, closed, dns, DS = _checked_state(arrays)
        n, m = len(K), len(S)
        t = cls(*args, seeds=seeds)
        if n:
            t._reserve(n)
            t._view(n)
            t.K[:], t.status[:], t.srow[:], t.seed[:] = K, status, srow, seed
            t.links[:] = -1
            link_in_order(order, closed, t.links, t.lru)
        if m:
            t._reserve_rows(m)
            t._view_rows(m)
            t.S[:] = S
            has_row = srow >= 0
            t.owner[srow[has_row]] = np.flatnonzero(has_row)
        t.pool[: len(pool)] = pool
        t.st[:3] = st[:3]
        t.st[ST_BOUNDARY] = st[ST_BOUNDARY] if len(st) > ST_BOUNDARY else -1
        t.st[ST_KEY] = st[ST_KEY] if len(st) > ST_KEY else sketch_key
        t.st[ST_STOP] = 0
        t.DN = np.array(dns, dtype=np.float64)
        t.st[ST_DNS] = len(dns)
        t.DS = np.array(DS, dtype=np.float64)
        t.st[ST_DSEEDS] = len(DS)
        t.st[ST_SROWS] = m
        return t

    def runs_with(self, *args: float) -> bool:
        """Whether this table runs with these arguments (then it can go on as it is)."""
        params, max_open = _settings(*args)
        return bool(np.array_equal(params, self.params)) and max_open == self.max_open


def _checked_state(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The arrays of saved state, widened to today's columns; ValueError if inconsistent."""
    try:
        K, S, status, pool, st = (arrays[k] for k in ("K", "S", "status", "pool", "st"))
    except KeyError as exc:
        raise ValueError(f"invalid carry state: no array {exc}") from exc
    order, closed = arrays.get("lru"), arrays.get("closed")
    dns = arrays.get("dns", np.zeros((0, ND)))
    DS = arrays.get("dns_seeds", np.zeros((0, NDS)))
    srow, seed = arrays.get("srow"), arrays.get("seed")
    shapes = ((3,), (6,), (7,), (8,), (9,), (10,))
    n = int(st[0]) if st.shape in shapes and st.dtype == np.int64 else -1
    if srow is None and seed is None:
        # saved before seeds: every flow has its row, in flow order
        srow = np.arange(max(n, 0), dtype=np.int64)
        seed = np.zeros((max(n, 0), NSD), dtype=np.int64)
        if S.dtype == np.float64 and S.ndim == 2 and S.shape[0] == n and S.shape[1] < NS:
            S = _widen(S)
    elif srow is None or seed is None:
        raise ValueError("invalid carry state: seeds without their rows or the reverse")
    elif (
        seed.dtype == np.int64 and seed.ndim == 2 and seed.shape[1] in (SD_SECOND, SD_DNS, SD_THIRD)
    ):
        # saved when seeds held one packet (room for the second), no DNS (none) or two
        # packets (room for the third)
        more = np.zeros((len(seed), NSD - seed.shape[1]), np.int64)
        if seed.shape[1] <= SD_DNS:
            more[:, SD_DNS - seed.shape[1]] = -1
        seed = np.concatenate([seed, more], 1)
    slots = S[:, S_DNS_SLOT] if S.ndim == 2 and S.shape[1:] == (NS,) else np.zeros(0)
    if (
        K.dtype != np.int64
        or S.dtype != np.float64
        or status.dtype != np.int8
        or pool.dtype != np.uint8
        or srow.dtype != np.int64
        or seed.dtype != np.int64
        or K.shape != (n, NK)
        or S.ndim != 2
        or S.shape[1:] != (NS,)
        or status.shape != (n,)
        or srow.shape != (n,)
        or seed.shape != (n, NSD)
        or len(pool) > POOL_BYTES
        or int(st[1]) != len(pool)
    ):
        raise ValueError("invalid carry state: unexpected shapes or types")
    if n and (not np.isin(status, (FLOW_OPEN, FLOW_CLOSED)).all()):
        raise ValueError("invalid carry state: bad flow status")
    if (
        not np.array_equal(np.sort(srow[srow >= 0]), np.arange(len(S)))
        or ((srow < 0) & ~np.isin(srow, SEED_KINDS)).any()
    ):
        raise ValueError("invalid carry state: bad accumulator rows")
    if not _owned_once(dns, ND, slots):
        raise ValueError("invalid carry state: bad DNS rows")
    lens = S[:, S_QPOOL_LEN]
    offs = S[:, S_QPOOL_OFF]
    if n and ((lens > 0) & ((offs < 0) | (offs + lens > len(pool)))).any():
        raise ValueError("invalid carry state: name pool offsets out of range")
    # each name has its own bytes of the pool, so they add up to no more than it has
    # (compaction copies them into a pool of that size)
    kept = _check_dns_seeds(DS, srow, seed, len(pool)) + np.floor(lens[lens > 0]).sum()
    if kept > len(pool):
        raise ValueError("invalid carry state: names overlap in the pool")
    if order is None or closed is None:
        order, closed = _by_time(last_times(S, srow, seed, n), status)
    if (
        order.dtype != np.int64
        or closed.dtype != np.int64
        or order.shape != (n,)
        or not np.array_equal(np.sort(order), np.arange(n))
        or not np.array_equal(np.sort(closed), np.flatnonzero(status == FLOW_CLOSED))
    ):
        raise ValueError("invalid carry state: bad flow order")
    return K, S, status, srow, seed, pool, st, order, closed, dns, DS


def _owned_once(table: np.ndarray, width: int, rows: np.ndarray) -> bool:
    """Whether ``table`` is float64 rows of ``width`` of which each is the row of exactly
    one flow (``rows``: each flow's row, -1 for none)."""
    return (
        table.dtype == np.float64
        and table.ndim == 2
        and table.shape[1] == width
        and np.array_equal(np.sort(rows[rows >= 0]), np.arange(len(table)))
        and not ((rows < 0) & (rows != -1)).any()
    )


def _check_dns_seeds(DS: np.ndarray, srow: np.ndarray, seed: np.ndarray, pool: int) -> int:
    """ValueError unless ``DS`` holds the DNS of the seeds that say so, one row each, with
    codes that are whole numbers and names inside the pool of ``pool`` bytes; return the
    bytes of the names they keep."""
    if not _owned_once(DS, NDS, np.where(srow < 0, seed[:, SD_DNS], -1)):
        raise ValueError("invalid carry state: bad DNS rows of seeds")
    code, off = DS[:, DS_CODE::NDS_PACKET], DS[:, DS_POFF::NDS_PACKET]
    whole = np.isfinite(DS).all() and ((code >= 0) & (code < 2.0**53) & (code % 1 == 0)).all()
    if not whole:
        raise ValueError("invalid carry state: bad DNS codes of seeds")
    codes = code.astype(np.int64)
    kept = ((codes >> DC_NAME_SHIFT) & 3) == DC_NAME_KEPT
    lens = (codes >> DC_NAME_LEN) & 511
    if (kept & ((off < 0) | (off % 1 != 0) | (off + lens > pool))).any():
        raise ValueError("invalid carry state: name pool offsets out of range")
    return int(lens[kept].sum())


def _settings(
    idle_s: float,
    active_s: float,
    activity_s: float,
    grace_s: float,
    max_open: float = 0,
    slice_s: float = 0.0,
    *,
    seeds: bool | None = None,
) -> tuple[np.ndarray, int]:
    """A table's parameters (times in microseconds, ``P_*``) and open-flow cap."""
    params = np.array(
        [idle_s * 1e6, active_s * 1e6, activity_s * 1e6, grace_s * 1e6, 0.0, 0.0],
        dtype=np.float64,
    )
    params[P_SLICE] = float(round(max(0.0, slice_s) * 1e6))
    params[P_SEEDS] = 1.0 if (SEEDS if seeds is None else seeds) else 0.0
    return params, max(0, int(max_open))


def _widen(S: np.ndarray) -> np.ndarray:
    """Carry state saved by an earlier version (NS_V1 or NS_V2 columns), in today's."""
    if S.shape[1] not in (NS_V1, NS_V2):
        return S  # refused by the shape check
    out = np.zeros((len(S), NS), dtype=np.float64)
    out[:, : S.shape[1]] = S
    if S.shape[1] == NS_V1:
        out[:, S_SL_FIRST] = S[:, S_FIRST_TS]  # nothing of these flows was handed out yet
        out[:, S_DNS_SLOT] = -1.0
    # wire bytes already handed out in slices: the share of the packets handed out
    fwd_wire, bwd_wire = out[:, S_FWD_WIRE], out[:, S_BYTES] - out[:, S_FWD_WIRE]
    for d, wire in ((0, fwd_wire), (1, bwd_wire)):
        pkts = out[:, S_FLEN + 6 * d + ST_N]
        share = np.divide(out[:, S_B_PKTS + d], pkts, out=np.zeros(len(S)), where=pkts > 0)
        out[:, S_B_WIRE + d] = np.round(wire * share)
    return out
