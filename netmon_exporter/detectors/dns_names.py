"""Query names described in bulk (compiled): what the DNS tunnel detector needs of a name.

The detector judges names by their registered domain, their length, the characters of
subdomain they carry and their Shannon entropy, and leaves out names under reputation
zones. Described one by one in Python that was ~8 us a name, most of the main
process's analysis on ordinary traffic (a site's DNS brings tens of thousands of new
names a minute) and more under a random-subdomain flood, whose names are all new.
:func:`describe` does the same for a list of names in one compiled pass over their
characters (code points, so any text), with the same results as the per-name
functions of :mod:`.dns_tunnel` bit for bit (``tests/test_dns_names.py`` compares them
on hostile names); the per-name functions stay as the reference.

Loading the compiled code costs a process ~30 MB the first time (numba's runtime), so
the detector describes only large batches of new names this way (``BULK_FROM``) and
smaller ones one by one: a quiet site's main process never loads it.

A name is in a zone when it is the zone or ends with ``.`` and the zone
(:func:`.dns_tunnel.in_zones`); here each of its suffixes after a dot is hashed, the
hashes are looked up among the zones' and a name with a hit is confirmed by the exact
per-name test, so a hash collision costs a lookup, never a wrong answer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Sequence

import numpy as np

from ..compiled import njit
from .base import member_of

BULK_FROM = 5_000  # new names in one window from which they are described in bulk
_DOT = 46  # "."
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def code_points(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The names' characters as one uint32 array of code points, and where each starts
    (``len(names) + 1`` offsets)."""
    starts = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, names), np.int64, len(names)), out=starts[1:])
    text = "".join(names).encode("utf-32-le", "surrogatepass")
    return np.frombuffer(text, dtype="<u4"), starts  # read-only: one compiled form


@njit(cache=True, nogil=True, inline="always")
def _suffix_hash(chars, start, end):
    h = _FNV_OFFSET
    for j in range(start, end):
        h = (h ^ np.uint64(chars[j])) * _FNV_PRIME
    return h


@njit(cache=True, nogil=True)
def _describe(chars, starts, levels, level_lens):
    """Per name: entropy, start and end of its registered domain, subdomain characters,
    and the hashes of its suffixes at dots (the whole name's first) with their owners."""
    n = len(starts) - 1
    entropy = np.zeros(n, np.float64)
    dom_start = np.zeros(n, np.int64)
    dom_end = np.zeros(n, np.int64)
    sub_chars = np.zeros(n, np.int64)
    dots = 0
    for j in range(len(chars)):
        if chars[j] == _DOT:
            dots += 1
    hashes = np.empty(n + dots, np.uint64)
    owners = np.empty(n + dots, np.int64)
    longest = 1
    for i in range(n):
        longest = max(longest, starts[i + 1] - starts[i])
    distinct = np.empty(longest, np.uint32)
    counts = np.empty(longest, np.int64)
    slot = np.full(256, -1, np.int64)  # where a character below 256 is counted
    k = 0
    for i in range(n):
        a, b = starts[i], starts[i + 1]
        length = b - a
        # entropy: counts in order of first occurrence, summed in that order; characters
        # below 256 found at once, others by a scan of those seen (a name has at most a
        # few hundred characters)
        m = 0
        for j in range(a, b):
            c = chars[j]
            if c < 256:
                q = slot[c]
                if q < 0:
                    q = m
                    slot[c] = m
            else:
                q = 0
                while q < m and distinct[q] != c:
                    q += 1
            if q == m:
                distinct[m] = c
                counts[m] = 0
                m += 1
            counts[q] += 1
        for q in range(m):
            if distinct[q] < 256:
                slot[distinct[q]] = -1
        total = 0.0
        for q in range(m):
            p = counts[q] / length
            total += p * math.log2(p)
        entropy[i] = -total if m else 0.0
        # registered domain: the last two labels, three under a second-level label of a
        # two-letter top-level domain (co.uk); trailing dots stripped
        e = b
        while e > a and chars[e - 1] == _DOT:
            e -= 1
        d1 = d2 = d3 = a - 1
        for j in range(e - 1, a - 1, -1):
            if chars[j] == _DOT:
                if d1 < a:
                    d1 = j
                elif d2 < a:
                    d2 = j
                else:
                    d3 = j
                    break
        start = a
        if d2 >= a:  # three labels or more
            start = d2 + 1
            if e - d1 - 1 == 2:
                ln = d1 - d2 - 1
                for r in range(len(level_lens)):
                    if level_lens[r] != ln:
                        continue
                    same = True
                    for t in range(ln):
                        if chars[d2 + 1 + t] != levels[r, t]:
                            same = False
                            break
                    if same:
                        start = d3 + 1
                        break
        dom_start[i] = start - a
        dom_end[i] = e - a
        sub = max(length - (e - start) - 1, 0)
        nd = 0
        for j in range(a, a + sub):
            if chars[j] == _DOT:
                nd += 1
        sub_chars[i] = sub - nd
        # the whole name and each suffix after a dot
        hashes[k] = _suffix_hash(chars, a, b)
        owners[k] = i
        k += 1
        for j in range(a, b):
            if chars[j] == _DOT:
                hashes[k] = _suffix_hash(chars, j + 1, b)
                owners[k] = i
                k += 1
    return entropy, dom_start, dom_end, sub_chars, hashes[:k], owners[:k]


def _levels(labels: Collection[str]) -> tuple[np.ndarray, np.ndarray]:
    width = max((len(s) for s in labels), default=1)
    out = np.zeros((len(labels), width), np.uint32)
    for r, s in enumerate(sorted(labels)):
        out[r, : len(s)] = [ord(c) for c in s]
    return out, np.array([len(s) for s in sorted(labels)], np.int64)


class NameDescriber:
    """Describe names in bulk for one set of second-level labels and reputation zones."""

    def __init__(self, second_level: Collection[str], zones: Collection[str]) -> None:
        self.levels, self.level_lens = _levels(second_level)
        self.zones = frozenset(zones)

    @functools.cached_property
    def zone_hashes(self) -> np.ndarray:
        """The zones' hashes, made at the first call (it loads the compiled code)."""
        chars, starts = code_points(sorted(self.zones))
        _, _, _, _, hashes, owners = _describe(chars, starts, self.levels, self.level_lens)
        whole = np.ones(len(owners), bool)  # each zone's first hash is of the whole zone
        whole[1:] = owners[1:] != owners[:-1]
        return np.unique(hashes[whole])

    def describe(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Per name: ``entropy`` (bits per character), ``domain_start``/``domain_end``
        (the registered domain is ``name[domain_start:domain_end]``), ``sub_chars``
        (characters of subdomain, dots not counted) and ``in_zones`` (the name is a
        reputation zone or under one)."""
        chars, starts = code_points(names)
        ent, d0, d1, sub, hashes, owners = _describe(chars, starts, self.levels, self.level_lens)
        zoned = np.zeros(len(names), bool)
        if len(self.zone_hashes) and len(hashes):
            hit = np.unique(owners[member_of(hashes, self.zone_hashes)])
            from .dns_tunnel import in_zones  # the exact test, for the few names with a hit

            zoned[hit] = [in_zones(names[i], self.zones) for i in hit.tolist()]
        return {
            "entropy": ent,
            "domain_start": d0,
            "domain_end": d1,
            "sub_chars": sub,
            "in_zones": zoned,
        }
