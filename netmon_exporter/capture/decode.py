"""Compiled record walkers and the link/IP/transport decoder.

The walkers turn a byte buffer holding whole pcap records or pcapng blocks into
one row per packet of the packet table ``P`` (int64, one column per ``F_*``
field) plus ``PE`` (float64: DNS query-name entropy). Nothing here allocates
per packet and nothing raises: every malformed input ends as a status code.

All integer arithmetic is done in int64 so that numba never mixes signed and
unsigned types (which would silently promote to float64).
"""

from __future__ import annotations

import secrets

import numpy as np

from ..compiled import njit

# Packet-table columns -----------------------------------------------------------
F_TS = 0  # timestamp, microseconds since the epoch
F_WIRELEN = 1  # original length on the wire
F_STATUS = 2  # ST_* below
F_PROTO = 3  # IP protocol number (after extension headers), -1 if not IP
F_SHI = 4  # source address, high 64 bits (IPv4 as ::ffff:a.b.c.d)
F_SLO = 5
F_DHI = 6
F_DLO = 7
F_SPORT = 8  # TCP/UDP ports; 0 when unknown
F_DPORT = 9
F_FLAGS = 10  # TCP flags byte (FIN=1 ... CWR=128)
F_WIN = 11  # TCP window (0 for other protocols)
F_HDR = 12  # transport header length (TCP data offset, 8 for UDP/ICMP)
F_PAY = 13  # transport payload length (from IP lengths, not the captured length)
F_ICMPT = 14  # ICMP/ICMPv6 type, -1 otherwise
F_ICMPC = 15  # ICMP/ICMPv6 code, -1 otherwise
F_ICMPID = 16  # (1 << 20) | identifier for echo-like ICMP messages, 0 otherwise
F_FRAG = 17  # 0 not a fragment, 1 first fragment, 2 later fragment
F_DNS = 18  # -1 not DNS, 0 query, 1 response
F_RCODE = 19  # DNS RCODE
F_QOFF = 20  # offset of the first query-name label in the buffer, -1 if none
F_QLEN = 21  # query-name length (dotted, no trailing dot)
F_QLABELS = 22  # number of labels
F_IPV = 23  # 4 or 6, 0 if not IP
F_TUNNEL = 24  # TUN_*: the packet was decoded from inside this tunnel (0: none)
N_FIELDS = 25

ST_OK = 0
ST_NON_IP = 1
ST_TRUNCATED = 2
ST_MALFORMED = 3
ST_UNSUPPORTED_LINK = 4

# Tunnels decoded through (the outermost is kept in F_TUNNEL), as Zeek and Suricata do:
# IP in IP (IPv4 or IPv6 in IPv4 or IPv6, protocols 4 and 41), GRE (RFC 2784/2890,
# version 0: IP, transparent Ethernet bridging, ERSPAN types I-III), VXLAN (UDP 4789,
# AWS VPC Traffic Mirroring's) and Geneve (UDP 6081). Up to MAX_TUNNEL_DEPTH tunnels
# deep (Zeek's Tunnel::max_depth; fewer, or none, per reader: ``fragment_cache``'s
# ``tunnel_depth``, ``flows.tunnel_depth``); a tunnel whose inner IP header is not all
# captured, or of another kind, is decoded as the outer packet. VXLAN and Geneve are
# opened only between site-internal outer addresses (a mirror session, an overlay):
# UDP to 4789 or 6081 across the internet is a flow of its own, else a channel shaped
# like VXLAN would show as whatever inner packets it carries (hiding its own endpoint,
# its schedule and its volume) instead of as itself.
TUN_NONE, TUN_IP, TUN_GRE, TUN_ERSPAN, TUN_VXLAN, TUN_GENEVE = 0, 1, 2, 3, 4, 5
TUNNEL_NAMES = ("", "ip-in-ip", "gre", "erspan", "vxlan", "geneve")
MAX_TUNNEL_DEPTH = 2
VXLAN_PORT, GENEVE_PORT = 4789, 6081

# Walker return codes.
W_OK = 0  # stopped because the buffer or the packet table ran out
W_CORRUPT = 1  # record/block header that cannot be right; cannot resync

MAX_RECORD = 1 << 24  # larger pcap records / pcapng blocks are corrupt
MAX_IFACES = 256
FRAG_SLOTS = 4096  # direct-mapped cache: first fragment's ports by IP id
# Fragment cache columns (one row per slot, and a last row of the reader's settings: the
# key of the slot hash in FR_ADDR, the tunnel depth in FR_TUNNEL_DEPTH): the datagram (addresses, protocol, IP identification), its ports, a
# mark, then what is known of its TCP header (-1 until a fragment covering it came) and
# where its first fragment sits in the packet table (row, timestamp).
FR_ADDR, FR_PROTO, FR_IDENT, FR_SPORT, FR_DPORT, FR_USED = 0, 4, 5, 6, 7, 8
FR_FLAGS, FR_HLEN, FR_WIN, FR_ROW, FR_TS = 9, 10, 11, 12, 13
FRAG_COLS = 14
FR_TUNNEL_DEPTH = 1  # in the last row

V4_MAPPED_HI = 0
V4_MAPPED_LO_PREFIX = 0xFFFF << 32


@njit(cache=True, inline="always")
def _u16(b, o):
    return (np.int64(b[o]) << 8) | np.int64(b[o + 1])


@njit(cache=True, inline="always")
def _u32(b, o):
    return (
        (np.int64(b[o]) << 24)
        | (np.int64(b[o + 1]) << 16)
        | (np.int64(b[o + 2]) << 8)
        | np.int64(b[o + 3])
    )


@njit(cache=True, inline="always")
def _u16x(b, o, swapped):
    if swapped:
        return (np.int64(b[o + 1]) << 8) | np.int64(b[o])
    return (np.int64(b[o]) << 8) | np.int64(b[o + 1])


@njit(cache=True, inline="always")
def _u32x(b, o, swapped):
    if swapped:
        return (
            (np.int64(b[o + 3]) << 24)
            | (np.int64(b[o + 2]) << 16)
            | (np.int64(b[o + 1]) << 8)
            | np.int64(b[o])
        )
    return _u32(b, o)


@njit(cache=True, inline="always")
def _u64(b, o):
    v = np.int64(0)
    for k in range(8):
        v = (v << 8) | np.int64(b[o + k])
    return v


@njit(cache=True)
def _parse_dns(b, d, end, P, PE, i, hist):
    """Parse a DNS header and first question at ``b[d:end]`` into row ``i``."""
    if end - d < 12:
        return
    flags = _u16(b, d + 2)
    qd = _u16(b, d + 4)
    if (flags >> 11) & 0xF > 2:  # opcode beyond QUERY/IQUERY/STATUS: not DNS-like
        return
    P[i, F_DNS] = (flags >> 15) & 1
    P[i, F_RCODE] = flags & 0xF
    if qd == 0:
        return
    p = d + 12
    qlen = 0
    labels = 0
    ok = False
    while p < end:
        ln = np.int64(b[p])
        if ln == 0:
            ok = True
            break
        if ln > 63 or p + 1 + ln > end or qlen + ln + 1 > 255:
            break
        if labels > 0:
            hist[46] += 1  # '.'
            qlen += 1
        for k in range(ln):
            c = np.int64(b[p + 1 + k])
            if 65 <= c <= 90:
                c += 32
            hist[c] += 1
        qlen += ln
        labels += 1
        p += 1 + ln
    if ok and labels > 0:
        P[i, F_QOFF] = d + 12
        P[i, F_QLEN] = qlen
        P[i, F_QLABELS] = labels
        h = 0.0
        for c in range(256):
            if hist[c] > 0:
                q = hist[c] / qlen
                h -= q * np.log2(q)
        PE[i] = h
    for c in range(256):
        hist[c] = 0


def fragment_cache(key: int | None = None, tunnel_depth: int = MAX_TUNNEL_DEPTH) -> np.ndarray:
    """A reader's fragment cache, its slot hash keyed by ``key`` (default: a random key
    per cache, so that nobody can choose datagrams that evict another's first fragment).

    Its last row also holds the reader's settings for the decoder: the key, and how
    many tunnels deep packets are opened (``tunnel_depth``, 0 to ``MAX_TUNNEL_DEPTH``;
    0 decodes every packet as its outermost header says)."""
    if not 0 <= tunnel_depth <= MAX_TUNNEL_DEPTH:
        raise ValueError(f"tunnel_depth must be 0 to {MAX_TUNNEL_DEPTH}, not {tunnel_depth}")
    frag = np.zeros((FRAG_SLOTS + 1, FRAG_COLS), dtype=np.int64)
    frag[FRAG_SLOTS, 0] = secrets.randbits(63) if key is None else key
    frag[FRAG_SLOTS, FR_TUNNEL_DEPTH] = tunnel_depth
    return frag


@njit(cache=True)
def _frag_slot(shi, slo, dhi, dlo, proto, ident, key):
    h = ((shi * 31 + slo) * 1000003 + (dhi * 31 + dlo) * 7919 + proto * 131 + ident) ^ key
    h ^= (h >> 33) & np.int64(0x7FFFFFFF)  # MurmurHash3's finaliser: every bit counts
    h *= np.int64(-49064778989728563)
    h ^= (h >> 33) & np.int64(0x7FFFFFFF)
    h *= np.int64(-4265267296055464877)
    h ^= (h >> 33) & np.int64(0x7FFFFFFF)
    return h & (FRAG_SLOTS - 1)


@njit(cache=True)
def _same_datagram(frag, s, P, i, proto, ident):
    return (
        frag[s, FR_USED] == 1
        and frag[s, 0] == P[i, F_SHI]
        and frag[s, 1] == P[i, F_SLO]
        and frag[s, 2] == P[i, F_DHI]
        and frag[s, 3] == P[i, F_DLO]
        and frag[s, FR_PROTO] == proto
        and frag[s, FR_IDENT] == ident
    )


@njit(cache=True)
def _first_row(frag, s, P, i):
    """The row of the datagram's first fragment in this packet table (-1: not in it)."""
    r = frag[s, FR_ROW]
    if (
        r >= 0
        and r < i
        and P[r, F_FRAG] == 1
        and P[r, F_TS] == frag[s, FR_TS]
        and P[r, F_SHI] == frag[s, 0]
        and P[r, F_SLO] == frag[s, 1]
        and P[r, F_DHI] == frag[s, 2]
        and P[r, F_DLO] == frag[s, 3]
        and P[r, F_PROTO] == frag[s, FR_PROTO]
        and P[r, F_SPORT] == frag[s, FR_SPORT]
        and P[r, F_DPORT] == frag[s, FR_DPORT]
    ):
        return r
    return -1


@njit(cache=True)
def _tcp_fragment(b, l4, end, ip_pay, off, P, i, frag, s):
    """A later fragment of a TCP segment: the header fields the first fragment did not
    hold (``nmap -f`` cuts the header into 8-byte pieces, so the flags come second) are
    read from here and given to the first fragment too (when it is in this packet table);
    each fragment carries the segment's flags; header bytes count as header, not payload."""
    have = end - l4  # bytes of this fragment captured
    if have > ip_pay:
        have = ip_pay
    r = _first_row(frag, s, P, i)
    if frag[s, FR_HLEN] < 0 and off <= 12 and off + have > 12:
        hl = (np.int64(b[l4 + 12 - off]) >> 4) * 4
        frag[s, FR_HLEN] = hl if hl >= 20 else 20
    if frag[s, FR_FLAGS] < 0 and off <= 13 and off + have > 13:
        frag[s, FR_FLAGS] = np.int64(b[l4 + 13 - off])
        if r >= 0:
            P[r, F_FLAGS] = frag[s, FR_FLAGS]
    if frag[s, FR_WIN] < 0 and off <= 14 and off + have > 15:
        frag[s, FR_WIN] = _u16(b, l4 + 14 - off)
        if r >= 0:
            P[r, F_WIN] = frag[s, FR_WIN]
    if frag[s, FR_FLAGS] >= 0:
        P[i, F_FLAGS] = frag[s, FR_FLAGS]
    if frag[s, FR_WIN] >= 0:
        P[i, F_WIN] = frag[s, FR_WIN]
    hl = frag[s, FR_HLEN] if frag[s, FR_HLEN] >= 0 else 20
    head = hl - off  # header bytes still to come at this fragment's offset
    if head > ip_pay:
        head = ip_pay
    if head > 0:
        P[i, F_HDR] = head
        P[i, F_PAY] = ip_pay - head


@njit(cache=True)
def _ether(b, p, end):
    """An Ethernet frame at ``b[p]`` (VLAN and QinQ tags, PPPoE session, an MPLS label
    stack): (where its IP packet starts, its version: 4 or 6; 0 when it holds none, -1
    when the captured bytes end inside its headers)."""
    if p + 14 > end:
        return p, -1
    et = _u16(b, p + 12)
    q = p + 14
    while (et == 0x8100 or et == 0x88A8 or et == 0x9100) and q + 4 <= end:
        et = _u16(b, q + 2)
        q += 4
    if et == 0x8100 or et == 0x88A8 or et == 0x9100:
        return q, -1
    if et == 0x8864:  # PPPoE session
        if q + 8 > end:
            return q, -1
        ppp = _u16(b, q + 6)
        q += 8
        et = 0x0800 if ppp == 0x21 else (0x86DD if ppp == 0x57 else 0)
    if et == 0x8847 or et == 0x8848:  # MPLS: labels down to the bottom of the stack
        for _ in range(16):
            if q + 4 > end:
                return q, -1
            bottom = np.int64(b[q + 2]) & 1
            q += 4
            if bottom:
                break
        if q >= end:
            return q, -1
        v = np.int64(b[q]) >> 4  # no payload type in MPLS: IP says its version
        return q, (4 if v == 4 else (6 if v == 6 else 0))
    if et == 0x0800:
        return q, 4
    if et == 0x86DD:
        return q, 6
    return q, 0


@njit(cache=True)
def _inner_ip(b, q, v, end):
    """``v`` (4 or 6) when a whole IP header of that version is captured at ``b[q]``."""
    if v == 4 and q + 20 <= end and (np.int64(b[q]) >> 4) == 4:
        return 4
    if v == 6 and q + 40 <= end and (np.int64(b[q]) >> 4) == 6:
        return 6
    return 0


@njit(cache=True, inline="always")
def _internal(hi, lo):
    """Whether an address (two int64 halves; IPv4 mapped) is site-internal: RFC 1918,
    CGNAT, link-local, loopback, IPv6 ULA and link-local."""
    if hi == 0 and (lo >> 32) == 0xFFFF:
        a = (lo >> 24) & 0xFF
        b = (lo >> 16) & 0xFF
        return (
            a == 10
            or a == 127
            or (a == 172 and (b & 0xF0) == 16)
            or (a == 192 and b == 168)
            or (a == 100 and (b & 0xC0) == 64)
            or (a == 169 and b == 254)
        )
    top = (hi >> 48) & 0xFFFF
    return (top & 0xFE00) == 0xFC00 or (top & 0xFFC0) == 0xFE80


@njit(cache=True)
def _tunnel(b, proto, l4, end):
    """A tunnel's inner IP packet, if this is one: (start, version, TUN_*; version 0:
    not a tunnel this decoder opens, or its inner header not all captured)."""
    if proto == 4 or proto == 41:
        return l4, _inner_ip(b, l4, 4 if proto == 4 else 6, end), TUN_IP
    if proto == 47:  # GRE, version 0 (1 is PPTP's, carrying PPP); no source routing
        if l4 + 4 > end:
            return l4, 0, TUN_NONE
        fl = _u16(b, l4)
        if (fl & 7) != 0 or (fl & 0x4000) != 0:
            return l4, 0, TUN_NONE
        q = l4 + 4 + (4 if fl & 0x8000 else 0) + (4 if fl & 0x2000 else 0)
        seq = (fl & 0x1000) != 0
        q += 4 if seq else 0
        pt = _u16(b, l4 + 2)
        if pt == 0x0800 or pt == 0x86DD:
            return q, _inner_ip(b, q, 4 if pt == 0x0800 else 6, end), TUN_GRE
        kind = TUN_GRE
        if pt == 0x88BE:  # ERSPAN type II (8-byte header, with a sequence number) or I
            kind = TUN_ERSPAN
            q += 8 if seq else 0
        elif pt == 0x22EB:  # ERSPAN type III: 12 bytes, 8 more with the O flag
            kind = TUN_ERSPAN
            if q + 12 > end:
                return q, 0, TUN_NONE
            q += 20 if (np.int64(b[q + 11]) & 1) else 12
        elif pt != 0x6558:  # transparent Ethernet bridging
            return q, 0, TUN_NONE
        e, v = _ether(b, q, end)
        return e, (_inner_ip(b, e, v, end) if v > 0 else 0), kind
    if proto == 17 and l4 + 16 <= end:
        dport = _u16(b, l4 + 2)
        if dport == VXLAN_PORT and (np.int64(b[l4 + 8]) & 0x08) != 0:
            e, v = _ether(b, l4 + 16, end)
            return e, (_inner_ip(b, e, v, end) if v > 0 else 0), TUN_VXLAN
        if dport == GENEVE_PORT and (np.int64(b[l4 + 8]) >> 6) == 0:
            q = l4 + 16 + (np.int64(b[l4 + 8]) & 0x3F) * 4
            pt = _u16(b, l4 + 10)
            if pt == 0x6558:
                e, v = _ether(b, q, end)
                return e, (_inner_ip(b, e, v, end) if v > 0 else 0), TUN_GENEVE
            if pt == 0x0800 or pt == 0x86DD:
                return q, _inner_ip(b, q, 4 if pt == 0x0800 else 6, end), TUN_GENEVE
    return l4, 0, TUN_NONE


@njit(cache=True)
def decode_packet(b, o, caplen, wirelen, linktype, ts, P, PE, i, frag, hist):
    """Decode one frame starting at ``b[o]`` into row ``i`` of the packet table."""
    for k in range(N_FIELDS):
        P[i, k] = 0
    P[i, F_TS] = ts
    P[i, F_WIRELEN] = wirelen
    P[i, F_PROTO] = -1
    P[i, F_ICMPT] = -1
    P[i, F_ICMPC] = -1
    P[i, F_DNS] = -1
    P[i, F_QOFF] = -1
    PE[i] = 0.0
    end = o + caplen
    p = o
    ipv = 0
    # ---- link layer -------------------------------------------------------------
    if linktype == 1:  # Ethernet
        p, ipv = _ether(b, o, end)
        if ipv < 0:
            P[i, F_STATUS] = ST_TRUNCATED
            return
    elif linktype == 113:  # Linux cooked v1
        if caplen < 16:
            P[i, F_STATUS] = ST_TRUNCATED
            return
        et = _u16(b, o + 14)
        p = o + 16
        ipv = 4 if et == 0x0800 else (6 if et == 0x86DD else 0)
    elif linktype == 276:  # Linux cooked v2
        if caplen < 20:
            P[i, F_STATUS] = ST_TRUNCATED
            return
        et = _u16(b, o)
        p = o + 20
        ipv = 4 if et == 0x0800 else (6 if et == 0x86DD else 0)
    elif (
        linktype == 101 or linktype == 12 or linktype == 14 or linktype == 228 or linktype == 229
    ):  # raw IP
        if caplen < 1:
            P[i, F_STATUS] = ST_TRUNCATED
            return
        v = np.int64(b[o]) >> 4
        ipv = 4 if v == 4 else (6 if v == 6 else 0)
    elif linktype == 0 or linktype == 108:  # BSD null / OpenBSD loopback
        if caplen < 5:
            P[i, F_STATUS] = ST_TRUNCATED
            return
        p = o + 4
        v = np.int64(b[p]) >> 4
        ipv = 4 if v == 4 else (6 if v == 6 else 0)
    else:
        P[i, F_STATUS] = ST_UNSUPPORTED_LINK
        return
    if ipv == 0:
        P[i, F_STATUS] = ST_NON_IP
        return
    # ---- network layer (and tunnels: the packet inside is the one decoded) ----------
    for depth in range(MAX_TUNNEL_DEPTH + 1):
        P[i, F_IPV] = ipv
        fragstate = 0
        ident = np.int64(0)
        foff = np.int64(0)  # a fragment's offset in its datagram's transport bytes
        if ipv == 4:
            if p + 20 > end:
                P[i, F_STATUS] = ST_TRUNCATED
                return
            if (np.int64(b[p]) >> 4) != 4:
                P[i, F_STATUS] = ST_MALFORMED
                return
            ihl = (np.int64(b[p]) & 15) * 4
            tot = _u16(b, p + 2)
            if tot == 0:  # TSO / segmentation offload: trust the capture
                tot = wirelen - (p - o)
            if ihl < 20 or tot < ihl:
                P[i, F_STATUS] = ST_MALFORMED
                return
            ff = _u16(b, p + 6)
            fo = ff & 0x1FFF
            mf = ff & 0x2000
            ident = _u16(b, p + 4)
            proto = np.int64(b[p + 9])
            P[i, F_SHI] = 0
            P[i, F_SLO] = (np.int64(0xFFFF) << 32) | _u32(b, p + 12)
            P[i, F_DHI] = 0
            P[i, F_DLO] = (np.int64(0xFFFF) << 32) | _u32(b, p + 16)
            ip_end = p + tot
            l4 = p + ihl
            if fo != 0:
                fragstate = 2
                foff = fo * 8
            elif mf != 0:
                fragstate = 1
        else:
            if p + 40 > end:
                P[i, F_STATUS] = ST_TRUNCATED
                return
            if (np.int64(b[p]) >> 4) != 6:
                P[i, F_STATUS] = ST_MALFORMED
                return
            plen = _u16(b, p + 4)
            if plen == 0:  # jumbogram or offload
                plen = wirelen - (p - o) - 40
            nh = np.int64(b[p + 6])
            P[i, F_SHI] = _u64(b, p + 8)
            P[i, F_SLO] = _u64(b, p + 16)
            P[i, F_DHI] = _u64(b, p + 24)
            P[i, F_DLO] = _u64(b, p + 32)
            ip_end = p + 40 + plen
            l4 = p + 40
            for _ in range(16):
                if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140:
                    if l4 + 2 > end:
                        P[i, F_PROTO] = nh
                        P[i, F_STATUS] = ST_TRUNCATED
                        return
                    nxt = np.int64(b[l4])
                    l4 += (np.int64(b[l4 + 1]) + 1) * 8
                    nh = nxt
                elif nh == 44:
                    if l4 + 8 > end:
                        P[i, F_PROTO] = nh
                        P[i, F_STATUS] = ST_TRUNCATED
                        return
                    nxt = np.int64(b[l4])
                    fw = _u16(b, l4 + 2)
                    ident = _u32(b, l4 + 4)
                    if (fw & 0xFFF8) != 0:
                        fragstate = 2
                        foff = fw & 0xFFF8
                    elif fw & 1:
                        fragstate = 1
                    l4 += 8
                    nh = nxt
                elif nh == 51:
                    if l4 + 2 > end:
                        P[i, F_PROTO] = nh
                        P[i, F_STATUS] = ST_TRUNCATED
                        return
                    nxt = np.int64(b[l4])
                    l4 += (np.int64(b[l4 + 1]) + 2) * 4
                    nh = nxt
                else:
                    break
            proto = nh
            if l4 > ip_end:
                P[i, F_PROTO] = proto
                P[i, F_STATUS] = ST_MALFORMED
                return
        if fragstate != 0 or depth >= frag[FRAG_SLOTS, FR_TUNNEL_DEPTH]:
            break
        lim = end if end < ip_end else ip_end  # this packet's bytes, as captured
        inner, iv, kind = _tunnel(b, proto, l4, lim)
        if iv == 0:
            break
        if (kind == TUN_VXLAN or kind == TUN_GENEVE) and not (  # noqa: SIM109 - compiled
            _internal(P[i, F_SHI], P[i, F_SLO]) and _internal(P[i, F_DHI], P[i, F_DLO])
        ):
            break  # UDP to 4789/6081 across the internet: a flow of its own, not a mirror
        if P[i, F_TUNNEL] == 0:
            P[i, F_TUNNEL] = kind  # the outermost tunnel
        p = inner
        ipv = iv
        end = lim
    P[i, F_PROTO] = proto
    P[i, F_FRAG] = fragstate
    ip_pay = ip_end - l4
    if ip_pay < 0:
        ip_pay = 0
    # ---- later fragments: no transport header; borrow the first fragment's ports --
    if fragstate == 2:
        P[i, F_PAY] = ip_pay
        if proto == 6 or proto == 17:
            key = frag[FRAG_SLOTS, 0]
            s = _frag_slot(P[i, F_SHI], P[i, F_SLO], P[i, F_DHI], P[i, F_DLO], proto, ident, key)
            if _same_datagram(frag, s, P, i, proto, ident):
                P[i, F_SPORT] = frag[s, FR_SPORT]
                P[i, F_DPORT] = frag[s, FR_DPORT]
                if proto == 6:
                    _tcp_fragment(b, l4, end, ip_pay, foff, P, i, frag, s)
        return
    cap_l4 = end - l4  # transport bytes actually captured
    # ---- transport layer ----------------------------------------------------------
    if proto == 6:
        if cap_l4 < 4:
            P[i, F_STATUS] = ST_TRUNCATED
            return
        P[i, F_SPORT] = _u16(b, l4)
        P[i, F_DPORT] = _u16(b, l4 + 2)
        hdr = 20
        if cap_l4 >= 13:
            hdr = (np.int64(b[l4 + 12]) >> 4) * 4
            if hdr < 20:
                P[i, F_STATUS] = ST_MALFORMED
                return
        if cap_l4 >= 14:
            P[i, F_FLAGS] = np.int64(b[l4 + 13])
        if cap_l4 >= 16:
            P[i, F_WIN] = _u16(b, l4 + 14)
        if hdr > ip_pay:
            hdr = ip_pay
        P[i, F_HDR] = hdr
        P[i, F_PAY] = ip_pay - hdr
    elif proto == 17:
        if cap_l4 < 4:
            P[i, F_STATUS] = ST_TRUNCATED
            return
        sp = _u16(b, l4)
        dp = _u16(b, l4 + 2)
        P[i, F_SPORT] = sp
        P[i, F_DPORT] = dp
        hdr = 8 if ip_pay >= 8 else ip_pay
        P[i, F_HDR] = hdr
        P[i, F_PAY] = ip_pay - hdr
        if sp == 53 or dp == 53 or sp == 5353 or dp == 5353:
            dend = l4 + ip_pay
            if dend > end:
                dend = end
            _parse_dns(b, l4 + 8, dend, P, PE, i, hist)
    elif proto == 1 or proto == 58:
        if cap_l4 < 2:
            P[i, F_STATUS] = ST_TRUNCATED
            return
        t = np.int64(b[l4])
        P[i, F_ICMPT] = t
        P[i, F_ICMPC] = np.int64(b[l4 + 1])
        echo = False
        if proto == 1:
            echo = (
                t == 0 or t == 8 or t == 13 or t == 14 or t == 15 or t == 16 or t == 17 or t == 18
            )
        else:
            echo = t == 128 or t == 129
        if echo:  # marker bit 20: echo-like, keyed by identifier (which may be 0)
            P[i, F_ICMPID] = (np.int64(1) << 20) | (_u16(b, l4 + 4) if cap_l4 >= 6 else 0)
        hdr = 8 if ip_pay >= 8 else ip_pay
        P[i, F_HDR] = hdr
        P[i, F_PAY] = ip_pay - hdr
    else:
        P[i, F_PAY] = ip_pay
    if fragstate == 1 and (proto == 6 or proto == 17):
        key = frag[FRAG_SLOTS, 0]
        s = _frag_slot(P[i, F_SHI], P[i, F_SLO], P[i, F_DHI], P[i, F_DLO], proto, ident, key)
        frag[s, 0] = P[i, F_SHI]
        frag[s, 1] = P[i, F_SLO]
        frag[s, 2] = P[i, F_DHI]
        frag[s, 3] = P[i, F_DLO]
        frag[s, FR_PROTO] = proto
        frag[s, FR_IDENT] = ident
        frag[s, FR_SPORT] = P[i, F_SPORT]
        frag[s, FR_DPORT] = P[i, F_DPORT]
        frag[s, FR_USED] = 1
        # what this fragment held of the TCP header (cap_l4: its transport bytes captured)
        tcp = proto == 6
        hl = (np.int64(b[l4 + 12]) >> 4) * 4 if tcp and cap_l4 >= 13 and ip_pay >= 13 else -1
        frag[s, FR_HLEN] = hl
        frag[s, FR_FLAGS] = P[i, F_FLAGS] if tcp and cap_l4 >= 14 and ip_pay >= 14 else -1
        frag[s, FR_WIN] = P[i, F_WIN] if tcp and cap_l4 >= 16 and ip_pay >= 16 else -1
        frag[s, FR_ROW] = i
        frag[s, FR_TS] = P[i, F_TS]


@njit(cache=True, nogil=True)
def walk_pcap(b, pos, end, swapped, nanosec, linktype, P, PE, maxp, frag, hist, res):
    """Decode whole pcap records from ``b[pos:end]``; ``res`` gets (pos, n, code)."""
    n = 0
    code = W_OK
    while n < maxp:
        if pos + 16 > end:
            break
        sec = _u32x(b, pos, swapped)
        frac = _u32x(b, pos + 4, swapped)
        incl = _u32x(b, pos + 8, swapped)
        orig = _u32x(b, pos + 12, swapped)
        if incl > MAX_RECORD:
            code = W_CORRUPT
            break
        if pos + 16 + incl > end:
            break
        if orig < incl:
            orig = incl
        ts = sec * 1000000 + (frac // 1000 if nanosec else frac)
        decode_packet(b, pos + 16, incl, orig, linktype, ts, P, PE, n, frag, hist)
        n += 1
        pos += 16 + incl
    res[0] = pos
    res[1] = n
    res[2] = code


@njit(cache=True)
def _pcapng_ts(hi, lo, r, off_s):
    t = (hi << 32) | lo
    if r & 0x80:
        e = r & 0x7F
        us = np.int64(float(t) * 1e6 / (2.0**e))
    elif r <= 6:
        us = t * np.int64(10 ** (6 - r))
    elif r <= 18:
        us = t // np.int64(10 ** (r - 6))
    else:
        us = np.int64(0)
    return us + off_s * 1000000


@njit(cache=True, inline="always")
def _malformed(P, PE, n, orig, ts):
    """Row ``n``: a packet whose record cannot be read (bad interface, bad lengths)."""
    for kk in range(N_FIELDS):
        P[n, kk] = 0
    P[n, F_STATUS] = ST_MALFORMED
    P[n, F_WIRELEN] = orig
    P[n, F_TS] = ts
    P[n, F_PROTO] = -1
    P[n, F_DNS] = -1
    P[n, F_QOFF] = -1
    PE[n] = 0.0


@njit(cache=True, nogil=True)
def walk_pcapng(b, pos, end, st, if_link, if_res, if_off, P, PE, maxp, frag, hist, res):
    """Decode whole pcapng blocks from ``b[pos:end]``.

    ``st`` holds the section state across calls: [byte order swapped, number of
    interfaces, last timestamp]. Per-interface link type, ``if_tsresol`` byte and
    ``if_tsoffset`` seconds live in ``if_link``/``if_res``/``if_off``.
    """
    n = 0
    code = W_OK
    sw = st[0] != 0
    while n < maxp:
        if pos + 12 > end:
            break
        btype = _u32x(b, pos, sw)
        if btype == 0x0A0D0D0A:
            bom = _u32x(b, pos + 8, False)
            if bom == 0x1A2B3C4D:
                sw = False
            elif bom == 0x4D3C2B1A:
                sw = True
            else:
                code = W_CORRUPT
                break
        blen = _u32x(b, pos + 4, sw)
        if blen < 12 or (blen & 3) != 0 or blen > MAX_RECORD:
            code = W_CORRUPT
            break
        if pos + blen > end:
            break
        if btype == 0x0A0D0D0A:
            st[1] = 0
        elif btype == 1:  # interface description
            if blen < 20 or st[1] >= MAX_IFACES:
                code = W_CORRUPT
                break
            k = st[1]
            if_link[k] = _u16x(b, pos + 8, sw)
            if_res[k] = 6
            if_off[k] = 0
            q = pos + 16
            qend = pos + blen - 4
            while q + 4 <= qend:
                oc = _u16x(b, q, sw)
                ol = _u16x(b, q + 2, sw)
                if oc == 0 or q + 4 + ol > qend:
                    break
                if oc == 9 and ol >= 1:
                    if_res[k] = np.int64(b[q + 4])
                elif oc == 14 and ol >= 8:
                    hi = _u32x(b, q + 4, sw)
                    lo = _u32x(b, q + 8, sw)
                    if_off[k] = (lo << 32) | hi if sw else (hi << 32) | lo
                q += 4 + ((ol + 3) & ~3)
            st[1] = k + 1
        elif btype == 6 or btype == 2:  # enhanced / obsolete packet block
            if blen < 32:
                code = W_CORRUPT
                break
            ifid = _u32x(b, pos + 8, sw) if btype == 6 else _u16x(b, pos + 8, sw)
            hi = _u32x(b, pos + 12, sw)
            lo = _u32x(b, pos + 16, sw)
            cap = _u32x(b, pos + 20, sw)
            orig = _u32x(b, pos + 24, sw)
            if ifid >= st[1] or 28 + cap > blen - 4:
                _malformed(P, PE, n, orig, st[2])
            else:
                ts = _pcapng_ts(hi, lo, if_res[ifid], if_off[ifid])
                st[2] = ts
                if orig < cap:
                    orig = cap
                decode_packet(b, pos + 28, cap, orig, if_link[ifid], ts, P, PE, n, frag, hist)
            n += 1
        elif btype == 3:  # simple packet block: interface 0, no timestamp
            if blen < 16:
                code = W_CORRUPT
                break
            orig = _u32x(b, pos + 8, sw)
            cap = blen - 16
            if orig < cap:
                cap = orig
            if st[1] < 1:
                _malformed(P, PE, n, orig, st[2])
            else:
                decode_packet(b, pos + 12, cap, orig, if_link[0], st[2], P, PE, n, frag, hist)
            n += 1
        pos += blen
    st[0] = 1 if sw else 0
    res[0] = pos
    res[1] = n
    res[2] = code
