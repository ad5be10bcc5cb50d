"""Query names described in bulk (detectors/dns_names.py) give what the per-name functions
give, bit for bit, on hostile names; and the DNS tunnel detector describes them the same
either way, ids included."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon_exporter.detectors.catalog import DnsTunnelConfig
from netmon_exporter.detectors.dns_names import NameDescriber
from netmon_exporter.detectors.dns_tunnel import (
    _SECOND_LEVEL,
    DnsTunnelDetector,
    in_zones,
    registered_domain,
    shannon_entropy,
    zone_suffixes,
)

ZONES = frozenset(zone_suffixes(DnsTunnelConfig().reputation_zones))

# labels as they come: ordinary, random, second-level ones, zone labels, empty, hostile
_LABEL = st.one_of(
    st.sampled_from(["www", "mail", "example", "co", "uk", "com", "org", "au", "arpa", "local"]),
    st.sampled_from(sorted(_SECOND_LEVEL)),
    st.sampled_from(sorted({p for z in ZONES for p in z.split(".")})),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=0, max_size=70),
    st.text(min_size=0, max_size=12),  # any code point: NUL, non-ASCII, astral, surrogates
    st.sampled_from(["", "CO", "Spamhaus", "\x00", "é", "中国", "😀", "\ud800"]),
)
_NAME = st.one_of(
    st.lists(_LABEL, min_size=0, max_size=8).map(".".join),
    st.lists(_LABEL, min_size=1, max_size=5).map(lambda ls: ".".join(ls) + "." * len(ls[0][:3])),
    st.sampled_from(sorted(ZONES)).flatmap(
        lambda z: st.lists(_LABEL, max_size=3).map(lambda ls: ".".join([*ls, z]))
    ),
)

_DESCRIBER = NameDescriber(_SECOND_LEVEL, ZONES)

# numba's JIT only: what the install step compiled into its cache (the fallback of the
# kernels built ahead of time, tests/test_compiled.py)
_JIT = {**os.environ, "NETMON_KERNELS": "jit"}


def _reference(name: str) -> tuple[int, str, int, bool]:
    domain = registered_domain(name)
    sub = name[: max(len(name) - len(domain) - 1, 0)]
    bits = int(np.float64(shannon_entropy(name)).view(np.uint64))
    return bits, domain, len(sub) - sub.count("."), in_zones(name, ZONES)


def _bulk(names: list[str], describer: NameDescriber = _DESCRIBER) -> list[tuple]:
    d = describer.describe(names)
    out = []
    for i, name in enumerate(names):
        bits = int(d["entropy"][i : i + 1].view(np.uint64)[0])
        domain = name[d["domain_start"][i] : d["domain_end"][i]]
        out.append((bits, domain, int(d["sub_chars"][i]), bool(d["in_zones"][i])))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_NAME, max_size=40))
def test_bulk_description_is_the_per_name_one_bit_for_bit(names: list[str]) -> None:
    assert _bulk(names) == [_reference(n) for n in names]


def test_known_names() -> None:
    names = [
        "",
        ".",
        "...",
        "a",
        "example.com",
        "example.com.",
        "a.b.example.com",
        "x.y.example.co.uk",
        "example.co.uk",
        "co.uk",
        "a..b.example.com",
        "x.example.ne.jp",
        "x.example.co.ukk",
        "127.0.0.2.zen.spamhaus.org",
        "spamhaus.org",
        "notspamhaus.org",
        "x.SPAMHAUS.ORG",
        "4.3.2.1.in-addr.arpa",
        "printer.local",
        "aGVsbG8gd29ybGQ.t.example.com",
        "ünïcödé.例え.jp",
        "\x00\x00.example.com\x00",
        "😀😀😀.co.uk",
        "a" * 255,
        "".join(map(chr, range(1, 256))),  # every character below 256, once
        "".join(chr(0x100 + i) for i in range(255)),  # 255 distinct, none below 256
        "".join(chr(0x100 + i % 7) + chr(i % 200) for i in range(120)) + ".co.uk",
    ]
    assert _bulk(names) == [_reference(n) for n in names]
    d = _DESCRIBER.describe(names)
    assert d["entropy"][names.index("a" * 255)] == 0.0
    assert list(d["in_zones"][names.index("127.0.0.2.zen.spamhaus.org") :][:3]) == [
        True,
        True,
        False,
    ]


def test_a_zone_hash_hit_is_confirmed_by_the_exact_test() -> None:
    # every suffix of every name "collides" with a zone: only real zone names are marked
    names = ["a.b.example.com", "x.spamhaus.org", "spamhaus.org.evil.com", "local"]
    everything = NameDescriber(_SECOND_LEVEL, ZONES)
    from netmon_exporter.detectors import dns_names

    chars, starts = dns_names.code_points(names)
    *_, hashes, _ = dns_names._describe(chars, starts, everything.levels, everything.level_lens)
    everything.zone_hashes = np.unique(np.concatenate([everything.zone_hashes, hashes]))
    assert [z for *_, z in _bulk(names, everything)] == [in_zones(n, ZONES) for n in names]
    assert [z for *_, z in _bulk(names, everything)] == [False, True, False, False]


def test_no_zones_marks_nothing() -> None:
    names = ["x.spamhaus.org", "a.b"]
    assert [z for *_, z in _bulk(names, NameDescriber(_SECOND_LEVEL, ()))] == [False, False]


def _batches() -> list[list[str]]:
    rng = np.random.default_rng(5)
    zones = ["example.com", "example.co.uk", "x.zen.spamhaus.org", "in-addr.arpa", "t.local"]
    out = []
    for _ in range(4):  # names seen before come back with their ids
        batch = [
            "".join(rng.choice(list("abcdef0123456789"), int(rng.integers(1, 40))))
            + "."
            + str(rng.choice(zones))
            for _ in range(30)
        ]
        out.append(sorted(set(batch + ["repeat.example.com", "", "example.com"])))
    return out


def _bits(t: tuple) -> tuple:
    return (*t[:5], np.float64(t[5]).view(np.uint64), t[6])


@pytest.fixture
def bulk_always(monkeypatch: pytest.MonkeyPatch) -> None:
    from netmon_exporter.detectors import dns_names

    monkeypatch.setattr(dns_names, "BULK_FROM", 1)


def test_the_detector_describes_names_in_bulk_as_one_by_one(bulk_always: None) -> None:
    one, bulk = DnsTunnelDetector(DnsTunnelConfig()), DnsTunnelDetector(DnsTunnelConfig())
    for names in _batches():
        want = [one._describe(n) for n in names]
        assert [_bits(g) for g in bulk._describe_all(names)] == [_bits(w) for w in want]
    assert one._domain_text == bulk._domain_text and one._next_id == bulk._next_id


def test_a_full_name_cache_is_cleared_and_names_keep_their_descriptions(
    bulk_always: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netmon_exporter.detectors import dns_tunnel

    monkeypatch.setattr(dns_tunnel, "_NAME_CACHE_LIMIT", 7)
    one, bulk = DnsTunnelDetector(DnsTunnelConfig()), DnsTunnelDetector(DnsTunnelConfig())
    for names in _batches():
        want = [one._describe(n) for n in names]
        got = bulk._describe_all(names)
        # ids differ once the cache was cleared within a batch (a name looked up before
        # the clear keeps its id here; one by one, a later name got a new one) ...
        assert [_bits(g)[2:] for g in got] == [_bits(w)[2:] for w in want]
        assert len(bulk._names) <= 7  # ... and the cache stays bounded
        ids = [g[0] for g in got]
        assert len(set(ids)) == len(ids)  # distinct names, distinct ids


def test_the_warm_up_compiles_what_the_detector_runs() -> None:
    """`python -m netmon_exporter.ingest.warm_pipeline` (run by `make`) compiles the very
    specialization of the bulk description that the detector runs: the daemon's main
    process must not compile it at its first DNS window. In a fresh process: nothing
    else loaded or compiled it."""
    import subprocess
    import sys

    code = """
from netmon_exporter.ingest.warm_pipeline import warm_detectors
from netmon_exporter.detectors import dns_names
from netmon_exporter.detectors.catalog import DnsTunnelConfig
from netmon_exporter.detectors.dns_tunnel import DnsTunnelDetector
warm_detectors()
compiled = list(dns_names._describe.signatures)
det = DnsTunnelDetector(DnsTunnelConfig(reputation_zones=()))
for names in ([], [""], ["x.spamhaus.org", "é.例え.jp", "😀.co.uk"], ["a"] * 3):
    det._describer.describe(names)
assert compiled and list(dns_names._describe.signatures) == compiled, (
    compiled, dns_names._describe.signatures
)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=_JIT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_quiet_site_never_loads_the_compiled_code() -> None:
    """Fewer new names in a window than ``BULK_FROM`` are described one by one: the main
    process does not pay numba's runtime (~30 MB) for them. In a fresh process."""
    import subprocess
    import sys

    code = """
from netmon_exporter.detectors import dns_names
from netmon_exporter.detectors.catalog import DnsTunnelConfig
from netmon_exporter.detectors.dns_tunnel import DnsTunnelDetector
det = DnsTunnelDetector(DnsTunnelConfig())
det._describe_all([f"h{i}.example.com" for i in range(dns_names.BULK_FROM - 1)])
assert not dns_names._describe.signatures, dns_names._describe.signatures
det._describe_all([f"n{i}.example.com" for i in range(dns_names.BULK_FROM)])
assert dns_names._describe.signatures  # a flood of new names: in bulk
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=_JIT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
