"""ICMP tunnelling: data carried in echo requests and replies between two hosts.

An echo reply returns the request's data (RFC 792; RFC 4443 for ICMPv6: "entirely
and unmodified"), so whatever pings, its replies carry the bytes its requests did.
A tunnel (ptunnel and ptunnel-ng, pingtunnel, hans, icmptunnel, icmpsh) answers with
data of its own: the far end's side of a TCP session, a shell's commands, the acks
of an upload. Payload-inspecting tools compare each reply with its request (Trisul's
"payload in echo/reply must match in real pings", Zeek ICMP exfiltration scripts'
asymmetric payloads); a flow's counters can compare their sums.

Per echo record (a flow's echo messages within one window, ``reads = "slices"``,
oriented from the side that sent the requests), the replies are **not echoes** when

* they carry more data than the requests (*more*): ``reply_bytes > request_bytes +
  slack``; or
* they carry less than the answered requests did (*less*): ``reply_bytes <
  request_bytes - unanswered * largest_request - slack``, where ``unanswered`` is the
  requests beyond the replies (each could have carried at most the flow's largest
  request; a request answered in the next window is one of them).

``slack`` is :data:`BOUNDARY_MESSAGES` messages of the flow's largest size when the
record continues a flow begun in an earlier window (replies to that window's requests
may be in it), none for a flow's first record. Later IP fragments the pair exchanged
in the window count for the side that sent them: the flow engine keeps a fragmented
message's first fragment in the echo flow and the rest in a flow of the address pair
(a jumbo-frame host answers a fragmented request in one piece). Losses, late replies
and fragments never break these bounds.

Per (requester, replier) pair, the records whose replies are not echoes are summed
over ``horizon_seconds``; the pair is reported when they carry at least
``min_payload_bytes`` of payload (both directions) in at least ``min_packets``
messages, **and their sizes vary**: the largest message of a direction exceeds the
smallest mean of a record of that direction by at least :data:`MIN_SPREAD_BYTES`. A
tunnel's messages follow its data; what breaks the bounds with fixed sizes is a
responder that truncates large pings (replies smaller) or duplicates every reply (a
bridging loop: replies carry twice the requests): ping's quirks, not data.

Not found, by definition: a tunnel whose replies are echoes (a one-way channel to a
sniffer, ``hping3 --file``, DET's ICMP exfiltration, ``ping -p``): it carries data
only in its content; a tunnel that pads every message of a direction to one size;
one below the volume. Echo-like messages other than echo (timestamp, information,
address mask) are not judged.

Evidence: the payload and messages counted, both directions' counts and bytes, their
largest messages, how much the sizes vary, which bound the replies broke and the
records counted. State: one row per not-echoed record (about 100 bytes), for the
horizon, at most ``max_state_rows``; ordinary pings leave none.
"""

from __future__ import annotations

import numpy as np

from ..detection import Detection
from ..flow_schema import ADDR_DTYPE, FlowBatch, addr_to_str, is_first
from .base import HorizonStore
from .catalog import IcmpTunnelConfig
from .features import ICMP, ICMPV6, combine, factorize_addrs, group, icmp_type, num

ECHO_REQUEST, ECHO_REPLY = 8, 0  # ICMP
ECHO6_REQUEST, ECHO6_REPLY = 128, 129  # ICMPv6
# A record's replies may answer requests of the window before (and its last requests
# be answered in the next): this many messages of the flow's largest size are slack.
BOUNDARY_MESSAGES = 2
# Sizes vary when a direction's largest message exceeds its smallest record mean by this.
MIN_SPREAD_BYTES = 1.0

# Which bound the replies broke (evidence "reason").
MORE, LESS, BOTH = "replies_carry_more", "replies_carry_less", "both"


def not_echoed(
    requests: np.ndarray,
    replies: np.ndarray,
    request_bytes: np.ndarray,
    reply_bytes: np.ndarray,
    max_request: np.ndarray,
    max_reply: np.ndarray,
    request_fragments: np.ndarray | float = 0.0,
    reply_fragments: np.ndarray | float = 0.0,
    continued: np.ndarray | bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per record, whether its replies carry more (first) or less (second) than echoes of
    its requests could (see the module docstring). ``*_fragments``: bytes of later IP
    fragments each side sent the other in the window, which the echo flow does not hold
    (it counts a fragmented message's first fragment). ``continued``: the record does
    not begin its flow, so replies to the window before's requests may be in it (the
    slack); a request whose reply falls in the next window is one unanswered here.
    Records without requests are not judged (replies alone: backscatter, replies to a
    broadcast ping, one direction captured)."""
    slack = np.where(continued, BOUNDARY_MESSAGES * np.maximum(max_request, max_reply), 0.0)
    asked = requests > 0
    more = asked & (reply_bytes > request_bytes + request_fragments + slack)
    unanswered = np.maximum(requests - replies, 0.0)
    less = asked & (
        reply_bytes + reply_fragments < request_bytes - unanswered * max_request - slack
    )
    return more, less


class IcmpTunnelDetector:
    """Echo exchanges whose replies are not echoes, summed per pair (module docstring)."""

    name = "icmp_tunnel"
    # Each window's own messages: a tunnel on one identifier is one flow for up to an
    # hour (the active timeout), judged while it runs.
    reads = "slices"

    def __init__(self, cfg: IcmpTunnelConfig) -> None:
        self.cfg = cfg
        self.store = HorizonStore(cfg.horizon_seconds, cfg.max_state_rows)

    def _records(self, flows: FlowBatch) -> dict[str, np.ndarray]:
        """The window's echo records whose replies are not echoes, oriented requester first."""
        proto = flows["protocol"]
        itype = icmp_type(flows)
        v4, v6 = proto == ICMP, proto == ICMPV6
        request_first = (v4 & (itype == ECHO_REQUEST)) | (v6 & (itype == ECHO6_REQUEST))
        reply_first = (v4 & (itype == ECHO_REPLY)) | (v6 & (itype == ECHO6_REPLY))
        idx = np.flatnonzero(request_first | reply_first)
        if len(idx) == 0:
            return _EMPTY
        # A flow whose first message seen was a reply (the capture began mid-ping) has
        # the replier forward: turn it round.
        swap = reply_first[idx]

        def pick(fwd: np.ndarray, bwd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            f, b = fwd[idx], bwd[idx]
            return np.where(swap, b, f), np.where(swap, f, b)

        requests, replies = pick(num(flows, "Tot Fwd Pkts"), num(flows, "Tot Bwd Pkts"))
        request_bytes, reply_bytes = pick(
            num(flows, "TotLen Fwd Pkts"), num(flows, "TotLen Bwd Pkts")
        )
        max_request, max_reply = pick(num(flows, "Fwd Pkt Len Max"), num(flows, "Bwd Pkt Len Max"))
        src = np.array(flows["src_ip"][idx], dtype=ADDR_DTYPE)
        dst = np.array(flows["dst_ip"][idx], dtype=ADDR_DTYPE)
        src[swap], dst[swap] = dst[swap], src[swap]
        fragments = (v4 | v6) & (itype < 0)
        request_fragments, reply_fragments = _fragment_bytes(flows, fragments, src, dst)
        more, less = not_echoed(
            requests,
            replies,
            request_bytes,
            reply_bytes,
            max_request,
            max_reply,
            request_fragments,
            reply_fragments,
            ~is_first(flows)[idx] | swap,  # a flow first seen at a reply began earlier
        )
        keep = more | less
        if not keep.any():
            return _EMPTY
        rows = idx[keep]
        src, dst = src[keep], dst[keep]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_request = request_bytes / requests
            mean_reply = reply_bytes / replies
        f32 = np.float32
        return {
            "ts": np.asarray(flows["last_ts"], dtype=np.float64)[rows],
            "first": np.asarray(flows["first_ts"], dtype=np.float64)[rows],
            "src": src,
            "dst": dst,
            "requests": requests[keep].astype(f32),
            "replies": replies[keep].astype(f32),
            "request_bytes": request_bytes[keep].astype(f32),
            "reply_bytes": reply_bytes[keep].astype(f32),
            "max_request": max_request[keep].astype(f32),
            "max_reply": max_reply[keep].astype(f32),
            # NaN where the record has no message of that direction
            "mean_request": mean_request[keep].astype(f32),
            "mean_reply": mean_reply[keep].astype(f32),
            "more": more[keep],
        }

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled:
            return []
        new = self._records(flows) if len(flows) else _EMPTY
        rows, is_new = self.store.update(new, window_end)
        if not is_new.any():
            return []
        g = _pairs(rows, is_new)
        cfg = self.cfg
        hit = (
            g["has_new"]
            & (g["payload"] >= cfg.min_payload_bytes)
            & (g["messages"] >= cfg.min_packets)
            & (g["spread"] >= MIN_SPREAD_BYTES)
        )
        return [
            self._detection(rows, g, int(i), window_start, window_end)
            for i in np.flatnonzero(hit).tolist()
        ]

    def _detection(
        self,
        rows: dict[str, np.ndarray],
        g: dict[str, np.ndarray],
        i: int,
        window_start: float,
        window_end: float,
    ) -> Detection:
        cfg = self.cfg
        row = int(g["row"][i])
        source, target = addr_to_str(rows["src"][row]), addr_to_str(rows["dst"][row])
        records, more = int(g["records"][i]), int(g["more"][i])
        reason = BOTH if more and more < records else (MORE if more else LESS)
        payload, messages = int(round(g["payload"][i])), int(round(g["messages"][i]))
        req_bytes, rep_bytes = int(round(g["request_bytes"][i])), int(round(g["reply_bytes"][i]))
        evidence = {
            "payload_bytes": payload,
            "threshold": cfg.min_payload_bytes,
            "messages": messages,
            "requests": int(round(g["requests"][i])),
            "replies": int(round(g["replies"][i])),
            "request_bytes": req_bytes,
            "reply_bytes": rep_bytes,
            "max_request_bytes": int(g["max_request"][i]),
            "max_reply_bytes": int(g["max_reply"][i]),
            "size_spread_bytes": round(float(g["spread"][i]), 1),
            "reason": reason,
            "records": records,
            "horizon_seconds": cfg.horizon_seconds,
            "first_seen": float(g["first_seen"][i]),
            "last_seen": float(g["last_seen"][i]),
        }
        how = {
            MORE: "replies carrying more than the requests",
            LESS: "replies carrying less than the requests",
            BOTH: "replies carrying more, then less, than the requests",
        }[reason]
        return Detection(
            detector=self.name,
            severity=cfg.severity,
            source=source,
            target=target,
            window_start=window_start,
            window_end=window_end,
            evidence=evidence,
            summary=(
                f"{source} exchanged {payload} bytes in {messages} ICMP echo messages with "
                f"{target}, {how} ({req_bytes} bytes of requests, {rep_bytes} of replies), "
                f"not echoes, sizes varying within {cfg.horizon_seconds:g} s"
            ),
        )


def _fragment_bytes(
    flows: FlowBatch, fragments: np.ndarray, src: np.ndarray, dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bytes of later ICMP fragments ``src`` sent ``dst`` in the window, and ``dst`` sent
    ``src``, per echo record. The flow engine keeps later fragments of an ICMP message in
    a flow of the address pair without ports (icmp_type -1): a request fragmented on its
    way while its reply comes whole (a jumbo-frame host) has only its first fragment in
    the echo flow."""
    n = len(src)
    if not fragments.any():
        return np.zeros(n), np.zeros(n)
    f = np.flatnonzero(fragments)
    a, b = flows["src_ip"][f], flows["dst_ip"][f]
    codes, _ = factorize_addrs(np.concatenate([src, dst, a, b]))
    size = int(codes.max()) + 1
    rec_s, rec_d = codes[:n], codes[n : 2 * n]
    fa, fb = codes[2 * n : 2 * n + len(f)], codes[2 * n + len(f) :]
    keys = np.concatenate([combine((fa, size), (fb, size)), combine((fb, size), (fa, size))])
    sent = np.concatenate([num(flows, "TotLen Fwd Pkts")[f], num(flows, "TotLen Bwd Pkts")[f]])
    uniq, inv = np.unique(keys, return_inverse=True)
    total = np.bincount(inv, weights=sent, minlength=len(uniq))

    def lookup(key: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(uniq, key), len(uniq) - 1)
        return np.where(uniq[pos] == key, total[pos], 0.0)

    return (
        lookup(combine((rec_s, size), (rec_d, size))),
        lookup(combine((rec_d, size), (rec_s, size))),
    )


def _pairs(rows: dict[str, np.ndarray], is_new: np.ndarray) -> dict[str, np.ndarray]:
    """Per (requester, replier): sums, how much sizes vary, whether a row is new, and the
    rest of the evidence (the first row of each pair names its addresses)."""
    n = len(rows["ts"])
    codes, table = factorize_addrs(np.concatenate([rows["src"], rows["dst"]]))
    gid, first, _ = group(combine((codes[:n], len(table)), (codes[n:], len(table))))
    n_groups = len(first)

    def total(column: str) -> np.ndarray:
        return np.bincount(gid, weights=rows[column].astype(np.float64), minlength=n_groups)

    def extreme(column: str, ufunc: np.ufunc, fill: float) -> np.ndarray:
        out = np.full(n_groups, fill)
        ufunc.at(out, gid, rows[column].astype(np.float64))
        return out

    def spread(largest: str, mean: str) -> np.ndarray:
        """Largest message of the direction minus its smallest record mean (0 if none)."""
        hi = np.full(n_groups, -np.inf)
        lo = np.full(n_groups, np.inf)
        m = rows[mean].astype(np.float64)
        has = np.isfinite(m)
        np.maximum.at(hi, gid[has], rows[largest][has].astype(np.float64))
        np.minimum.at(lo, gid[has], m[has])
        return np.where(np.isfinite(hi) & np.isfinite(lo), hi - lo, 0.0)

    requests, replies = total("requests"), total("replies")
    request_bytes, reply_bytes = total("request_bytes"), total("reply_bytes")
    return {
        "gid": gid,
        "requests": requests,
        "replies": replies,
        "request_bytes": request_bytes,
        "reply_bytes": reply_bytes,
        "payload": request_bytes + reply_bytes,
        "messages": requests + replies,
        "spread": np.maximum(
            spread("max_request", "mean_request"), spread("max_reply", "mean_reply")
        ),
        "has_new": np.bincount(gid[is_new], minlength=n_groups) > 0,
        # for the evidence
        "row": first,
        "records": np.bincount(gid, minlength=n_groups),
        "more": np.bincount(gid, weights=rows["more"], minlength=n_groups),
        "max_request": extreme("max_request", np.maximum, 0.0),
        "max_reply": extreme("max_reply", np.maximum, 0.0),
        "first_seen": extreme("first", np.minimum, np.inf),
        "last_seen": extreme("ts", np.maximum, -np.inf),
    }


_EMPTY: dict[str, np.ndarray] = {
    "ts": np.zeros(0),
    "first": np.zeros(0),
    "src": np.zeros(0, dtype=ADDR_DTYPE),
    "dst": np.zeros(0, dtype=ADDR_DTYPE),
    "requests": np.zeros(0, np.float32),
    "replies": np.zeros(0, np.float32),
    "request_bytes": np.zeros(0, np.float32),
    "reply_bytes": np.zeros(0, np.float32),
    "max_request": np.zeros(0, np.float32),
    "max_reply": np.zeros(0, np.float32),
    "mean_request": np.zeros(0, np.float32),
    "mean_reply": np.zeros(0, np.float32),
    "more": np.zeros(0, bool),
}
