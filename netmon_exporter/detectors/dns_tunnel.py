"""DNS tunnelling: many unique, long, high-entropy names under one domain from one source."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..detection import Detection
from ..flow_schema import FlowBatch, addr_to_str
from .base import HorizonStore
from .catalog import DnsTunnelConfig
from .features import combine, distinct_per_group, factorize_addrs, group

# Second-level labels under which registrations happen one level deeper (co.uk, com.au, ...).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "ac", "edu", "ne", "or", "go"})
# Names that are long and random by design, not tunnels.
_IGNORED_SUFFIXES = (".arpa", ".local")
_NAME_CACHE_LIMIT = 200_000


def registered_domain(name: str) -> str:
    """Return the registrable part of a query name (``a.b.example.co.uk`` -> ``example.co.uk``)."""
    labels = name.rstrip(".").split(".")
    if len(labels) <= 2:
        return ".".join(labels)
    if len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def shannon_entropy(text: str) -> float:
    """Return the Shannon entropy of the characters of ``text`` in bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


class DnsTunnelDetector:
    """Per (source, registered domain): distinct names over a horizon, and how random they look.

    A name is suspicious when it is at least ``min_qname_length`` long and its
    entropy is at least ``min_entropy``; a detection needs ``min_unique_subdomains``
    distinct names of which ``min_suspicious_share`` are suspicious. Reverse
    lookups (``.arpa``) and mDNS (``.local``) are ignored.
    """

    name = "dns_tunnel"

    def __init__(self, cfg: DnsTunnelConfig) -> None:
        self.cfg = cfg
        self.store = HorizonStore(cfg.horizon_seconds, cfg.max_state_rows)
        # name -> (name id, domain id, suspicious, length, entropy); ids only ever grow,
        # so ids in the history stay valid when the cache is cleared.
        self._names: dict[str, tuple[int, int, bool, int, float]] = {}
        self._domains: dict[str, int] = {}
        self._next_name = 0

    def _describe(self, name: str) -> tuple[int, int, bool, int, float]:
        got = self._names.get(name)
        if got is None:
            if len(self._names) >= _NAME_CACHE_LIMIT:
                self._names.clear()
            domain = registered_domain(name)
            domain_id = self._domains.get(domain)
            if domain_id is None:
                if len(self._domains) >= _NAME_CACHE_LIMIT:
                    self._domains.clear()
                domain_id = self._domains[domain] = self._next_name
                self._next_name += 1
            entropy = shannon_entropy(name)
            suspicious = len(name) >= self.cfg.min_qname_length and entropy >= self.cfg.min_entropy
            got = (self._next_name, domain_id, suspicious, len(name), entropy)
            self._next_name += 1
            self._names[name] = got
        return got

    def detect(self, flows: FlowBatch, window_start: float, window_end: float) -> list[Detection]:
        if not self.cfg.enabled or "dns_qname" not in flows:
            return []
        qname = flows["dns_qname"]
        idx = np.flatnonzero(flows["dst_port"] == 53)
        described = [
            self._describe(q) if q and not q.endswith(_IGNORED_SUFFIXES) else None
            for q in map(str, qname[idx])
        ]
        keep = np.array([d is not None for d in described], dtype=bool)
        kept = [d for d in described if d is not None]
        idx = idx[keep] if len(idx) else idx
        new = {
            "src": flows["src_ip"][idx],
            "ts": flows["first_ts"][idx],
            "name": np.array([d[0] for d in kept], dtype=np.int64),
            "domain": np.array([d[1] for d in kept], dtype=np.int64),
            "suspicious": np.array([d[2] for d in kept], dtype=bool),
            "length": np.array([d[3] for d in kept], dtype=np.int64),
            "entropy": np.array([d[4] for d in kept], dtype=np.float64),
            "text": qname[idx].astype(object),
        }
        rows, is_new = self.store.update(new, window_end)
        if len(is_new) < self.cfg.min_unique_subdomains or not is_new.any():
            return []
        src, table = factorize_addrs(rows["src"])
        n_ids = self._next_name + 1
        gid, first, counts = group(combine((src, len(table)), (rows["domain"], n_ids)))
        n_groups = len(first)
        unique = distinct_per_group(gid, n_groups, rows["name"], n_ids)
        has_new = np.bincount(gid[is_new], minlength=n_groups) > 0
        hits = np.flatnonzero((unique >= self.cfg.min_unique_subdomains) & has_new)
        out: list[Detection] = []
        for g in hits:
            m = np.flatnonzero(gid == g)
            _, once = np.unique(rows["name"][m], return_index=True)
            rows_g = m[once]  # one row per distinct name
            share = float(rows["suspicious"][rows_g].mean())
            if share < self.cfg.min_suspicious_share:
                continue
            source = addr_to_str(table[src[first[g]]])
            domain = registered_domain(str(rows["text"][first[g]]))
            evidence = {
                "unique_names": int(unique[g]),
                "threshold": self.cfg.min_unique_subdomains,
                "queries": int(counts[g]),
                "suspicious_share": round(share, 3),
                "mean_name_length": round(float(rows["length"][rows_g].mean()), 1),
                "max_name_length": int(rows["length"][rows_g].max()),
                "mean_entropy": round(float(rows["entropy"][rows_g].mean()), 3),
                "horizon_seconds": self.cfg.horizon_seconds,
                "sample_names": [str(rows["text"][i])[:80] for i in rows_g[:3]],
            }
            out.append(
                Detection(
                    detector=self.name,
                    severity=self.cfg.severity,
                    source=source,
                    target=domain,
                    window_start=window_start,
                    window_end=window_end,
                    evidence=evidence,
                    summary=(
                        f"{source} queried {int(unique[g])} distinct names under {domain} "
                        f"({share:.0%} long and random-looking) within "
                        f"{self.cfg.horizon_seconds:g} s"
                    ),
                )
            )
        return out
