"""DNS tunnelling: a source moving data through query names under a domain it controls.

Names are judged per (source, registered domain) over a horizon, by three rules:

* **long names**: at least ``min_unique_subdomains`` distinct names of which at least
  ``min_suspicious_share`` are long and random-looking (``min_qname_length``
  characters, Shannon entropy ``min_entropy`` bits per character): iodine, dnscat2,
  DNS beacons with data;
* **volume**: at least ``min_volume_names`` distinct names carrying at least
  ``min_volume_bytes`` characters of subdomain, nearly all of them new
  (``min_fresh_share`` of the queries ask a name not asked before) and arriving over
  at least ``min_active_minutes`` distinct minutes: a tunnel that keeps names short
  (RITA's "C2 over DNS" counts subdomains per domain the same way); a poller that
  resolves the same names again and again is not fresh, a one-off burst is not
  sustained;
* **spread**: a source whose long random names are spread over several domains (at
  least :data:`MIN_ZONE_NAMES` per domain) is judged on their sum, so rotating a
  tunnel over twenty domains does not divide it below the threshold.

What is not a tunnel: names under the reputation and blocklist zones of
``reputation_zones`` (a mail server's DNSBL/URIBL lookups and Spamhaus HBL's hashed
labels are long and random by design), reverse lookups (``.arpa``), mDNS
(``.local``); and the names a resolver forwards: a host that answered DNS for at
least ``resolver_min_clients`` clients is a resolver, and its own queries under a
domain that a client of the capture also queried are that client's, judged there.

One flow is one socket, and a tool that sends every query from one UDP socket
(iodine) makes one flow whose first name alone is known. The detector reads each
window's records (``reads = "slices"``: interim records of flows still open), and the
flow engine counts each record's distinct names, their lengths and label entropy: a
record of several distinct names under one domain stands for that many names (long
and random if they are so on average), so such a tunnel is judged while it runs.
Without those statistics (flows from CSV files) a record with at least
:data:`MIN_FLOW_QUERIES` queries of varying sizes, long on average, counts as that
many long names.

State: one row per (source, name) per window, for the horizon, at most
``max_state_rows`` (about 70 bytes each) and the (resolver, client) pairs seen.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection

import numpy as np

from .. import hash_key
from ..detection import Detection
from ..flow_schema import FlowBatch, addr_to_str
from . import dns_names
from .base import HorizonStore, addr_words, mix64, unique_columns
from .catalog import DnsTunnelConfig
from .dns_names import NameDescriber
from .features import UDP, col, combine, factorize_addrs, group, num

# Second-level labels under which registrations happen one level deeper (co.uk, com.au, ...).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "ac", "edu", "ne", "or", "go"})
# Names that are long and random by design, not tunnels.
_IGNORED_SUFFIXES = (".arpa", ".local")
_NAME_CACHE_LIMIT = 200_000
DNS_PORT = 53
MIN_ZONE_NAMES = 3  # spread rule: long random names a domain needs to count
MIN_FLOW_QUERIES = 10  # a one-socket flow with this many queries is judged as a stream
# A one-socket record whose names span a few domains (a tunnel alternating between two)
# is counted too when each has this many distinct names on average: a stub resolver or
# an application that reuses its socket asks a few names of many domains.
MAX_SHARED_ZONES = 4
MIN_NAMES_PER_ZONE = 10
DNS_OVERHEAD = 18  # bytes of a query besides its name: header, type, class, length octets
MAX_RESOLVER_ROWS = 200_000
SPREAD_TARGET = "many"  # the target of a tunnel spread over several domains


def registered_domain(name: str) -> str:
    """Return the registrable part of a query name (``a.b.example.co.uk`` -> ``example.co.uk``)."""
    labels = name.rstrip(".").split(".")
    if len(labels) <= 2:
        return ".".join(labels)
    if len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def shannon_entropy(text: str) -> float:
    """Return the Shannon entropy of the characters of ``text`` in bits per character
    (summed in the order characters first occur: the compiled
    :meth:`.dns_names.NameDescriber.describe` gives the same bits)."""
    if not text:
        return 0.0
    n = len(text)
    total = 0.0
    for c in Counter(text).values():
        total += c / n * math.log2(c / n)
    return -total


def zone_suffixes(zones: tuple[str, ...]) -> tuple[str, ...]:
    """Normalise zones for matching: lower case, no final dot, no ``*.``."""
    out = []
    for z in zones:
        z = z.strip().lower().rstrip(".")
        z = z[2:] if z.startswith("*.") else z
        if z:
            out.append(z)
    return tuple(out)


def in_zones(name: str, zones: Collection[str]) -> bool:
    """Whether ``name`` is one of ``zones`` or under one of them.

    Looks up each of the name's suffixes at a dot (a handful) rather than trying every
    zone: with ``zones`` a set, the cost does not grow with the list of zones.
    """
    if name in zones:
        return True
    dot = name.find(".")
    while dot >= 0:
        if name[dot + 1 :] in zones:
            return True
        dot = name.find(".", dot + 1)
    return False


def addr_hash(addrs: np.ndarray) -> np.ndarray:
    """Hash ``V16`` addresses into 64 bits (keyed: hash_key.py)."""
    hi, lo = addr_words(addrs)
    return mix64(mix64(lo, hash_key.word()) ^ hi)


class ObservedResolvers:
    """Hosts seen answering DNS (port 53) for at least ``min_clients`` clients in a horizon."""

    def __init__(self, horizon_seconds: float, min_clients: int) -> None:
        self.min_clients = min_clients
        self._pairs = HorizonStore(horizon_seconds, MAX_RESOLVER_ROWS)

    def update(self, flows: FlowBatch, now: float) -> np.ndarray:
        """Add the answered DNS exchanges of ``flows``; return the resolvers' address hashes."""
        dns = (flows["dst_port"] == DNS_PORT) & (num(flows, "Tot Bwd Pkts") > 0)
        pairs = np.zeros((2, 0), np.uint64)
        if dns.any():
            pairs, _ = unique_columns(
                addr_hash(flows["dst_ip"][dns]), addr_hash(flows["src_ip"][dns])
            )
        rows, _ = self._pairs.update(
            {"ts": np.full(pairs.shape[1], now), "dst": pairs[0], "src": pairs[1]}, now
        )
        if not len(rows["ts"]):
            return np.zeros(0, np.uint64)
        pairs, _ = unique_columns(rows["dst"], rows["src"])
        dsts, clients = np.unique(pairs[0], return_counts=True)
        return dsts[clients >= self.min_clients]


class DnsTunnelDetector:
    """Judge each source's query names per registered domain (see the module docstring)."""

    name = "dns_tunnel"
    # Each window's own queries (interim records of flows still open): a tunnel that
    # keeps one socket open is judged while it runs, not when its flow ends.
    reads = "slices"

    def __init__(self, cfg: DnsTunnelConfig) -> None:
        self.cfg = cfg
        self.store = HorizonStore(cfg.horizon_seconds, cfg.max_state_rows)
        self.resolvers = ObservedResolvers(cfg.horizon_seconds, cfg.resolver_min_clients)
        self._zones = frozenset(zone_suffixes(cfg.reputation_zones))
        self._describer = NameDescriber(_SECOND_LEVEL, self._zones)
        # name -> (name id, domain id, ignored, suspicious, length, entropy, subdomain chars);
        # ids only ever grow, so ids in the history stay valid when the cache is cleared.
        self._names: dict[str, tuple[int, int, bool, bool, int, float, int]] = {}
        self._domains: dict[str, int] = {}
        self._domain_text: dict[int, str] = {}
        self._next_id = 0

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _domain_id(self, domain: str) -> int:
        got = self._domains.get(domain)
        if got is None:
            if len(self._domains) >= _NAME_CACHE_LIMIT:
                self._domains.clear()
            got = self._domains[domain] = self._new_id()
            self._domain_text[got] = domain
            if len(self._domain_text) > 4 * _NAME_CACHE_LIMIT:
                self._domain_text = {i: d for d, i in self._domains.items()}
        return got

    def _describe(self, name: str) -> tuple[int, int, bool, bool, int, float, int]:
        """One name, described by the per-name functions (the reference for
        :meth:`_describe_all`, which gives the same)."""
        got = self._names.get(name)
        if got is None:
            if len(self._names) >= _NAME_CACHE_LIMIT:
                self._names.clear()
            domain = registered_domain(name)
            ignored = not name or name.endswith(_IGNORED_SUFFIXES) or in_zones(name, self._zones)
            entropy = shannon_entropy(name)
            suspicious = len(name) >= self.cfg.min_qname_length and entropy >= self.cfg.min_entropy
            sub = name[: max(len(name) - len(domain) - 1, 0)]
            got = (
                self._new_id(),
                self._domain_id(domain),
                ignored,
                suspicious,
                len(name),
                entropy,
                len(sub) - sub.count("."),
            )
            self._names[name] = got
        return got

    def _describe_all(self, names: list[str]) -> list[tuple[int, int, bool, bool, int, float, int]]:
        """:meth:`_describe` of each name: the same tuples, ids given in the same order
        (but for one case: a name already known keeps its id even when the cache fills
        and is cleared within the call). From ``dns_names.BULK_FROM`` new names on, the
        new ones are described in one compiled pass (:mod:`.dns_names`)."""
        cache = self._names
        got = [cache.get(q) for q in names]
        new = [i for i, g in enumerate(got) if g is None]
        if not new:
            return got  # type: ignore[return-value]
        if len(new) < dns_names.BULK_FROM:  # not worth loading the compiled code
            return [
                g if g is not None else self._describe(q) for g, q in zip(got, names, strict=True)
            ]
        fresh = [names[i] for i in new]
        d = self._describer.describe(fresh)
        min_len, min_ent = self.cfg.min_qname_length, self.cfg.min_entropy
        for j, (name, ent, d0, d1, sub, zoned) in enumerate(
            zip(
                fresh,
                d["entropy"].tolist(),
                d["domain_start"].tolist(),
                d["domain_end"].tolist(),
                d["sub_chars"].tolist(),
                d["in_zones"].tolist(),
                strict=True,
            )
        ):
            if len(cache) >= _NAME_CACHE_LIMIT:
                cache.clear()
            one = (
                self._new_id(),
                self._domain_id(name[d0:d1]),
                not name or name.endswith(_IGNORED_SUFFIXES) or zoned,
                len(name) >= min_len and ent >= min_ent,
                len(name),
                ent,
                sub,
            )
            cache[name] = got[new[j]] = one
        return got  # type: ignore[return-value]

    # ------------------------------------------------------------------ per window

    def _window_rows(self, flows: FlowBatch) -> dict[str, np.ndarray]:
        """One row per (source, name) of this window's DNS records (names described once).

        A record that asked several distinct names (one socket, iodine) only names its
        first; it stands for its distinct names (the engine's per-query statistics, or
        an estimate from its sizes where they are missing) under a row of its own.
        """
        qname = flows["dns_qname"]
        idx = np.flatnonzero((flows["dst_port"] == DNS_PORT) & (qname != ""))
        if len(idx) == 0:
            return {}
        uniq, inv = np.unique(qname[idx].astype(str), return_inverse=True)
        info = self._describe_all(uniq.tolist())
        name_id, domain_id, ignored, suspicious, length, entropy, sub = (
            np.array(c) for c in zip(*info, strict=True)
        )
        keep = ~ignored[inv]
        idx, inv = idx[keep], inv[keep]
        if len(idx) == 0:
            return {}
        m = self._multi_name(flows, idx, length[inv] - sub[inv])
        names, multi = m["names"], m["multi"]
        row_name = name_id[inv].copy()
        row_name[multi] = [self._new_id() for _ in range(int(multi.sum()))]
        src, table = factorize_addrs(flows["src_ip"][idx])
        n_ids = self._next_id + 1
        gid, first, _ = group(combine((src, len(table)), (row_name, n_ids)))
        n = len(first)
        ts = np.asarray(flows["first_ts"], dtype=np.float64)[idx]
        t_first = np.full(n, np.inf)
        np.minimum.at(t_first, gid, ts)
        rows = inv[first]
        multi_g = multi[first]  # a multi-name record is a group of its own
        return {
            "src": flows["src_ip"][idx][first],
            "ts": t_first,
            "name": row_name[first],
            "domain": domain_id[rows],
            "queries": np.bincount(gid, weights=m["queries"], minlength=n).astype(np.float32),
            "names": np.where(multi_g, names[first], 1.0).astype(np.float32),
            "bytes": np.where(multi_g, m["bytes"][first], sub[rows]).astype(np.float32),
            "suspicious": np.where(multi_g, m["long"][first], suspicious[rows]),
            "length": np.where(multi_g, m["length"][first], length[rows]).astype(np.int16),
            "entropy": np.where(multi_g, m["entropy"][first], entropy[rows]).astype(np.float32),
            "text": uniq[rows].astype(object),
        }

    def _multi_name(
        self, flows: FlowBatch, idx: np.ndarray, zone_chars: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Queries of each record, and for records of several distinct names their shape.

        The engine counts each record's distinct names, their lengths and label entropy
        (``dns_qnames``, ``dns_qname_len_total``, ``dns_label_entropy``). The record
        stands for its names under its first name's domain. One whose names span a few
        domains (``dns_zones``, at most :data:`MAX_SHARED_ZONES`) with at least
        :data:`MIN_NAMES_PER_ZONE` names each on average (a tunnel that alternates between
        domains) stands for its share of them (the names over the domains). One whose names
        span more domains, or fewer names a domain (a forwarder, a stub resolver), or that
        comes from port 53 (a resolver), is not counted this way. Without the statistics
        (flows from CSV files) a one-socket stream is recognised by its sizes: at least
        :data:`MIN_FLOW_QUERIES` queries that vary (different messages) and are long on
        average, all taken as distinct names.
        """
        udp = flows["protocol"][idx] == UDP
        not_resolver = flows["src_port"][idx] != DNS_PORT
        fwd_pkts = np.maximum(num(flows, "Tot Fwd Pkts")[idx], 1.0)
        asked = col(flows, "dns_queries")[idx]
        queries = np.where(np.isfinite(asked) & (asked >= 1), asked, fwd_pkts)
        distinct = col(flows, "dns_qnames")[idx]
        zones = col(flows, "dns_zones")[idx]
        known = np.isfinite(distinct)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_len = col(flows, "dns_qname_len_total")[idx] / queries
        label_entropy = col(flows, "dns_label_entropy")[idx]
        n_zones = np.where(zones > 1.5, np.round(zones), 1.0)  # NaN (unknown): one
        distinct_n = np.round(distinct)
        few_zones = (n_zones <= MAX_SHARED_ZONES) & (distinct_n >= MIN_NAMES_PER_ZONE * n_zones)
        counted = known & (distinct_n >= 2) & ((n_zones == 1) | few_zones) & not_resolver
        # Fallback: a stream recognised by its sizes.
        mean_query = col(flows, "Fwd Pkt Len Mean")[idx]
        varied = (col(flows, "Fwd Pkt Len Max")[idx] - mean_query > 1) | (
            col(flows, "Bwd Pkt Len Max")[idx] - col(flows, "Bwd Pkt Len Mean")[idx] > 1
        )
        stream = (
            ~known
            & udp
            & not_resolver
            & (fwd_pkts >= MIN_FLOW_QUERIES)
            & varied
            & (mean_query - DNS_OVERHEAD >= self.cfg.min_qname_length)
        )
        length = np.where(counted, mean_len, mean_query - DNS_OVERHEAD)
        names = np.where(counted, np.round(distinct_n / n_zones), fwd_pkts)
        return {
            "multi": counted | stream,
            "queries": queries,
            "names": names,
            "length": np.nan_to_num(length),
            "bytes": names * np.maximum(np.nan_to_num(length) - zone_chars, 1.0),
            "long": stream
            | ((mean_len >= self.cfg.min_qname_length) & (label_entropy >= self.cfg.min_entropy)),
            "entropy": np.where(counted, np.nan_to_num(label_entropy), 0.0),
        }

    # ------------------------------------------------------------------ detect

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled or "dns_qname" not in flows:
            return []
        resolvers = self.resolvers.update(flows, window_end) if len(flows) else np.zeros(0)
        new = self._window_rows(flows) if len(flows) else {}
        if not new:
            new = _EMPTY_ROWS
        rows, is_new = self.store.update(new, window_end)
        if not is_new.any():
            return []
        src, table = factorize_addrs(rows["src"])
        # A resolver's queries under a domain a client also asked are that client's.
        from_resolver = np.isin(addr_hash(table), resolvers)[src]
        asked = np.unique(rows["domain"][~from_resolver])
        forwarded = from_resolver & np.isin(rows["domain"], asked)
        if forwarded.any():
            keep = ~forwarded
            rows = {k: v[keep] for k, v in rows.items()}
            is_new = is_new[keep]
            src = src[keep]
            if not is_new.any():
                return []
        return self._judge(rows, is_new, src, table, window_start, window_end)

    def _judge(
        self,
        rows: dict[str, np.ndarray],
        is_new: np.ndarray,
        src: np.ndarray,
        table: np.ndarray,
        window_start: float,
        window_end: float,
    ) -> list[Detection]:
        """Judge each (source, domain) by the long-names and volume rules, each source by spread."""
        g = self._domain_stats(rows, is_new, src, len(table))
        rule = self._rule(g)
        out: list[Detection] = []
        for i in np.flatnonzero((rule > 0) & g["has_new"]).tolist():
            out.append(
                self._detection(
                    rows,
                    g["gid"],
                    i,
                    table,
                    src,
                    "long_names" if rule[i] == 1 else "volume",
                    _domain_measures(g, i),
                    window_start,
                    window_end,
                )
            )
        for groups in self._spread(g, rule, src, len(table)):
            top = int(groups[np.argmax(g["suspicious"][groups])])
            out.append(
                self._detection(
                    rows,
                    g["gid"],
                    top,
                    table,
                    src,
                    "spread",
                    _spread_measures(g, groups),
                    window_start,
                    window_end,
                    members=groups,
                )
            )
        return out

    def _domain_stats(
        self, rows: dict[str, np.ndarray], is_new: np.ndarray, src: np.ndarray, n_sources: int
    ) -> dict[str, np.ndarray]:
        """Per (source, domain) group: distinct names, long random ones, subdomain
        characters, queries, fresh and suspicious shares, active minutes, new this window."""
        n_ids = self._next_id + 1
        gid, first, _ = group(combine((src, n_sources), (rows["domain"], n_ids)))
        n_groups = len(first)
        # Distinct names per group: per (group, name) the largest estimate of its rows.
        nid, nfirst, _ = group(combine((gid, n_groups), (rows["name"], n_ids)))
        n_names = len(nfirst)
        names = np.zeros(n_names)
        np.maximum.at(names, nid, rows["names"].astype(np.float64))
        nbytes = np.zeros(n_names)
        np.maximum.at(nbytes, nid, rows["bytes"].astype(np.float64))
        g_of = gid[nfirst]
        unique = np.bincount(g_of, weights=names, minlength=n_groups)
        suspicious = np.bincount(
            g_of, weights=names * rows["suspicious"][nfirst], minlength=n_groups
        )
        queries = np.bincount(gid, weights=rows["queries"].astype(np.float64), minlength=n_groups)
        minute = np.floor(rows["ts"] / 60).astype(np.int64)
        minute -= minute.min() if len(minute) else 0
        _, mfirst, _ = group(combine((gid, n_groups), (minute, int(minute.max()) + 1)))
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(unique > 0, suspicious / unique, 0.0)
            fresh = np.where(queries > 0, np.minimum(unique / queries, 1.0), 0.0)
        return {
            "gid": gid,
            "source": src[first],
            "unique": unique,
            "suspicious": suspicious,
            "bytes": np.bincount(g_of, weights=nbytes, minlength=n_groups),
            "queries": queries,
            "minutes": np.bincount(gid[mfirst], minlength=n_groups),
            "has_new": np.bincount(gid[is_new], minlength=n_groups) > 0,
            "share": share,
            "fresh": fresh,
        }

    def _rule(self, g: dict[str, np.ndarray]) -> np.ndarray:
        """Per group, the rule it meets: 1 long names, 2 volume, 0 none."""
        cfg = self.cfg
        long_names = (g["unique"] >= cfg.min_unique_subdomains) & (
            g["share"] >= cfg.min_suspicious_share
        )
        volume = (
            (g["unique"] >= cfg.min_volume_names)
            & (g["bytes"] >= cfg.min_volume_bytes)
            & (g["fresh"] >= cfg.min_fresh_share)
            & (g["minutes"] >= cfg.min_active_minutes)
        )
        return np.where(long_names, 1, np.where(volume, 2, 0))

    def _spread(
        self, g: dict[str, np.ndarray], rule: np.ndarray, src: np.ndarray, n_sources: int
    ) -> list[np.ndarray]:
        """Per source that meets the spread rule: its groups (domains) that count towards it.

        A source whose long random names, a few per domain, add up over several domains,
        when none of its domains meets a rule alone and one of them is new this window.
        """
        g_src = g["source"]
        suspicious = g["suspicious"]
        counted = suspicious >= MIN_ZONE_NAMES
        src_long = np.bincount(g_src, weights=np.where(counted, suspicious, 0), minlength=n_sources)
        src_zones = np.bincount(g_src, weights=counted, minlength=n_sources)
        src_hit = np.bincount(g_src, weights=rule > 0, minlength=n_sources) > 0
        spread_src = (src_long >= self.cfg.min_unique_subdomains) & (src_zones >= 2) & ~src_hit
        new_src = np.bincount(g_src, weights=g["has_new"], minlength=n_sources) > 0
        return [
            np.flatnonzero((g_src == s) & counted) for s in np.flatnonzero(spread_src & new_src)
        ]

    def _detection(
        self,
        rows: dict[str, np.ndarray],
        gid: np.ndarray,
        g: int,
        table: np.ndarray,
        src: np.ndarray,
        rule: str,
        m: dict[str, float],
        window_start: float,
        window_end: float,
        members: np.ndarray | None = None,
    ) -> Detection:
        cfg = self.cfg
        in_group = np.isin(gid, members) if members is not None else gid == g
        sel = np.flatnonzero(in_group)
        _, once = np.unique(rows["name"][sel], return_index=True)
        sel = sel[once]
        source = addr_to_str(table[src[sel[0]]])
        domain = self._domain_text.get(int(rows["domain"][np.flatnonzero(gid == g)[0]]), "?")
        zones = [domain]
        if members is not None:
            top = members[np.argsort(-np.bincount(gid[sel], minlength=gid.max() + 1)[members])]
            zones = [self._domain_text.get(int(rows["domain"][gid == m][0]), "?") for m in top]
        unique = int(round(m["unique"]))
        threshold = cfg.min_volume_names if rule == "volume" else cfg.min_unique_subdomains
        domains = int(m["domains"])
        evidence = {
            "rule": rule,
            "unique_names": unique,
            "threshold": threshold,
            "queries": int(round(m["queries"])),
            "domains": domains,
            "suspicious_share": round(float(m["share"]), 3),
            "name_bytes": int(round(m["bytes"])),
            "fresh_share": round(float(m["fresh"]), 3),
            "active_minutes": int(m["minutes"]),
            "mean_name_length": round(float(rows["length"][sel].mean()), 1),
            "max_name_length": int(rows["length"][sel].max()),
            "mean_entropy": round(float(rows["entropy"][sel].mean()), 3),
            "horizon_seconds": cfg.horizon_seconds,
            "sample_names": [str(rows["text"][i])[:80] for i in sel[:3]],
            "sample_domains": zones[:5],
        }
        where = f"{domains} domains ({', '.join(zones[:3])}, ...)" if domains > 1 else domain
        what = {
            "long_names": "long and random-looking",
            "volume": f"fresh, {int(m['bytes'])} characters of subdomain",
            "spread": "long and random-looking",
        }[rule]
        return Detection(
            detector=self.name,
            severity=cfg.severity,
            source=source,
            target=SPREAD_TARGET if members is not None else domain,
            window_start=window_start,
            window_end=window_end,
            evidence=evidence,
            summary=(
                f"{source} queried {unique} distinct names under {where} ({what}) within "
                f"{cfg.horizon_seconds:g} s"
            ),
        )


def _domain_measures(g: dict[str, np.ndarray], i: int) -> dict[str, float]:
    """The measures of one (source, domain) group, as a finding reports them."""
    return {
        "unique": g["unique"][i],
        "queries": g["queries"][i],
        "domains": 1,
        "share": g["share"][i],
        "bytes": g["bytes"][i],
        "fresh": g["fresh"][i],
        "minutes": g["minutes"][i],
    }


def _spread_measures(g: dict[str, np.ndarray], groups: np.ndarray) -> dict[str, float]:
    """The measures of a source's names spread over ``groups`` (its domains), summed."""
    u = g["unique"][groups].sum()
    q = g["queries"][groups].sum()
    return {
        "unique": u,
        "queries": q,
        "domains": len(groups),
        "share": g["suspicious"][groups].sum() / max(u, 1.0),
        "bytes": g["bytes"][groups].sum(),
        "fresh": min(u / max(q, 1.0), 1.0),
        "minutes": g["minutes"][groups].max(),
    }


_EMPTY_ROWS: dict[str, np.ndarray] = {
    "src": np.zeros(0, dtype="V16"),
    "ts": np.zeros(0),
    "name": np.zeros(0, np.int64),
    "domain": np.zeros(0, np.int64),
    "queries": np.zeros(0, np.float32),
    "names": np.zeros(0, np.float32),
    "bytes": np.zeros(0, np.float32),
    "suspicious": np.zeros(0, bool),
    "length": np.zeros(0, np.int16),
    "entropy": np.zeros(0, np.float32),
    "text": np.zeros(0, object),
}
