"""The distinct-name sketches are keyed: names searched against the plain hash do not
hide a tunnel, a series keeps its key across files, and the daemon draws its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter.config import Config
from netmon_exporter.flows import flow_table as T
from netmon_exporter.ingest import executor
from netmon_exporter.pipeline import FlowSettings, process_file
from netmon_exporter.tools.cases_dns import hide_in_sketch
from tests.dns_capture import dns_message, udp_frame, write_pcap

CLIENT, PUBLIC = "10.1.2.3", "198.51.100.53"


def _tunnel(path: Path, names: list[str], t0: float = 1_700_000_000.0) -> Path:
    """One UDP socket asking ``names`` of a public resolver, each answered."""
    pkts = []
    for i, name in enumerate(names):
        t = t0 + 0.2 * i
        pkts.append((t, udp_frame(CLIENT, PUBLIC, 40000, 53, dns_message(i, name))))
        reply = dns_message(i, name, response=True, answer=True)
        pkts.append((t + 0.03, udp_frame(PUBLIC, CLIENT, 53, 40000, reply)))
    return write_pcap(path, pkts)


def _hidden_names(n: int, seed: int = 7) -> list[str]:
    """``n`` distinct tunnel names, each with a label searched against the unkeyed hash."""
    rng = np.random.default_rng(seed)
    out = []
    for serial in range(n):
        data = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz234567"), 50))]
        after = [f"{serial:x}", "tun", "example"]
        out.append(".".join([*data, hide_in_sketch(rng, data, after), *after]))
    return out


def _qnames(path: Path, **settings: object) -> float:
    flows = process_file(path, FlowSettings(**settings)).flows  # type: ignore[arg-type]
    i = int(np.nanargmax(np.nan_to_num(flows["dns_queries"])))
    return float(flows["dns_qnames"][i])


def test_names_searched_against_the_plain_hash_count_as_one_only_without_a_key(
    tmp_path: Path,
) -> None:
    names = _hidden_names(300)
    path = _tunnel(tmp_path / "t.pcap", names)
    assert _qnames(path) == 1.0  # the attack, against the unkeyed hash (key 0)
    rng = np.random.default_rng(11)
    for key in rng.integers(-(2**63), 2**63 - 1, 4, dtype=np.int64):
        # HyperLogLog's error with 64 registers is ~13 %: far from 1 whatever the key
        assert 300 * 0.6 < _qnames(path, sketch_key=int(key)) < 300 * 1.4, int(key)
    plain = [n.split(".", 2)[0] + "." + n.split(".", 2)[2] for n in names]  # no search
    assert 300 * 0.6 < _qnames(_tunnel(tmp_path / "p.pcap", plain)) < 300 * 1.4


def test_a_series_keeps_the_key_its_table_was_made_with(tmp_path: Path) -> None:
    """Carried across files (live, saved, or saved before keys), one flow's sketch is
    built with one key: the estimate equals the whole capture's under that key."""
    names = [f"n{i}x{i * 7919 % 1000:03d}.tun.example" for i in range(120)]
    whole = _tunnel(tmp_path / "whole.pcap", names)
    first = _tunnel(tmp_path / "a.pcap", names[:60])
    second = _tunnel(tmp_path / "b.pcap", names[60:], t0=1_700_000_000.0 + 0.2 * 60)
    k1, k2 = 0x0123_4567_89AB_CDEF, -0x1111_2222_3333_4444
    want = _qnames(whole, sketch_key=k1)
    assert want != _qnames(whole, sketch_key=k2)  # the keys give different estimates here

    def carried(carry: object, key: int) -> float:
        res = process_file(second, FlowSettings(sketch_key=key), carry=carry)  # type: ignore[arg-type]
        i = int(np.nanargmax(np.nan_to_num(res.flows["dns_queries"])))
        return float(res.flows["dns_qnames"][i])

    r1 = process_file(first, FlowSettings(sketch_key=k1), final=False)
    assert isinstance(r1.carry, bytes)
    assert carried(r1.carry, k2) == want  # saved: the carry's key, not the settings'
    live = process_file(
        first, FlowSettings(sketch_key=k1), final=False, save_carry=lambda table: table
    ).carry
    assert isinstance(live, T.FlowTable) and int(live.st[T.ST_KEY]) == k1
    assert carried(live, k2) == want
    # state saved before keys (st of 8 fields) goes on under the settings' key
    old = dict(T.FlowTable.from_bytes(r1.carry, *FlowSettings().table_args()).state_arrays())
    old["st"] = old["st"][: T.ST_KEY]
    restored = T.FlowTable.from_arrays(old, *FlowSettings().table_args(), sketch_key=k2)
    assert int(restored.st[T.ST_KEY]) == k2


def test_the_daemon_draws_a_secret_key_per_start() -> None:
    settings = executor.flow_settings(Config())
    assert settings.sketch_key == executor.flow_settings(Config()).sketch_key != 0
    code = "from netmon_exporter.ingest.executor import SKETCH_KEY; print(SKETCH_KEY)"
    keys = {
        int(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    }
    assert len(keys | {settings.sketch_key}) == 3


@pytest.mark.parametrize("key", [0, 1, -(2**63), 2**63 - 1])
def test_any_64_bit_key_is_taken(tmp_path: Path, key: int) -> None:
    path = _tunnel(tmp_path / "t.pcap", [f"q{i}.tun.example" for i in range(20)])
    assert 14 <= _qnames(path, sketch_key=key) <= 26
