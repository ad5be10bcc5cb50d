"""Hash flooding: flows crafted to share a slot of an unkeyed flow table do not make its
lookups quadratic (the table's hash is keyed per table and fully mixed, flow_table.ST_TKEY)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netmon_exporter.flows import flow_table as T
from netmon_exporter.pipeline import FlowSettings, process_file
from tests.colliding_flows import PER_PORT, sources, syn_frames

_M = (1 << 64) - 1


def _old_slot_bits(words: list[int], bits: int = 20) -> int:
    """The low ``bits`` of the flow table's former hash: an FNV-style chain from a fixed
    start, then ``h ^ (h >> 31)``."""
    h = -7046029254386353131 & _M
    for w in words:
        h = ((h ^ (w & _M)) * 1099511628211) & _M
    h ^= h >> 31
    return h & ((1 << bits) - 1)


def _longest_run(table: np.ndarray) -> int:
    """The longest run of occupied slots (linear probing walks a run to find a flow)."""
    occupied = np.concatenate([table, table]) >= 0  # runs wrap around the end
    edges = np.diff(np.concatenate([[0], occupied.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int(min((ends - starts).max(initial=0), len(table)))


def test_the_crafted_sources_collided_under_the_former_hash() -> None:
    """The generator is a real attack: its keys all took one slot of any table up to
    2**20 slots (keys as the table holds them: the lower endpoint first)."""
    src, sport = sources(PER_PORT)
    hi = src[:, :8].copy().view(">u8").ravel().astype(np.uint64)
    lo = src[:, 8:].copy().view(">u8").ravel().astype(np.uint64)
    vhi, vlo = (int.from_bytes(bytes.fromhex("20010db8ffff0000"), "big"), 0x80)
    slots = set()
    for h, low, p in zip(hi.tolist(), lo.tolist(), sport.tolist(), strict=True):
        a_first = h < vhi  # int64 order: both positive here
        words = [h, low, vhi, vlo] if a_first else [vhi, vlo, h, low]
        ports = (p << 16 | 443) if a_first else (443 << 16 | p)
        slots.add(_old_slot_bits([*words, ports, (6 << 32) | 0]))
    assert len(slots) == 1


def test_crafted_colliding_flows_spread_over_the_table(tmp_path: Path) -> None:
    path = tmp_path / "collide.pcap"
    n = 3 * PER_PORT
    path.write_bytes(syn_frames(*sources(n)))
    spread = tmp_path / "spread.pcap"
    spread.write_bytes(syn_frames(*sources(n, spread=True)))
    runs = []
    for p in (path, spread, path):
        res = process_file(p, FlowSettings(), final=False, save_carry=lambda table: table)
        table = res.carry
        assert isinstance(table, T.FlowTable) and table.open_flows == n
        runs.append(_longest_run(table.table))
    # ~25,000 flows in 65,536 slots: runs of a few dozen, never the 8192 of a cluster
    assert max(runs) < 200, runs
    # each table draws its own key, and never saves it
    a = T.FlowTable(*FlowSettings().table_args())
    b = T.FlowTable(*FlowSettings().table_args())
    assert a.st[T.ST_TKEY] != b.st[T.ST_TKEY]
    assert a.state_arrays()["st"][T.ST_TKEY] == 0
