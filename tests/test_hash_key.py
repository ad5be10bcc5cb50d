"""Hashes of what traffic controls are keyed (hash_key.py): what an attacker computes
against the plain hashes (names that hide in a sketch, flows ranked last by the sample)
fails, a series keeps its sketch key across files, and the daemon draws its own key."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netmon_exporter import hash_key
from netmon_exporter.config import Config
from netmon_exporter.detectors.scan_probes import HASH_KERNEL_ROWS
from netmon_exporter.flow_sample import FlowSample, group_keys, priorities
from netmon_exporter.flow_schema import FlowBatch, addrs_to_str, make_batch, str_to_addrs
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
        assert 300 * 0.6 < _qnames(path, hash_key=int(key)) < 300 * 1.4, int(key)
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
    want = _qnames(whole, hash_key=k1)
    assert want != _qnames(whole, hash_key=k2)  # the keys give different estimates here

    def carried(carry: object, key: int) -> float:
        res = process_file(second, FlowSettings(hash_key=key), carry=carry)  # type: ignore[arg-type]
        i = int(np.nanargmax(np.nan_to_num(res.flows["dns_queries"])))
        return float(res.flows["dns_qnames"][i])

    r1 = process_file(first, FlowSettings(hash_key=k1), final=False)
    assert isinstance(r1.carry, bytes)
    assert carried(r1.carry, k2) == want  # saved: the carry's key, not the settings'
    live = process_file(
        first, FlowSettings(hash_key=k1), final=False, save_carry=lambda table: table
    ).carry
    assert isinstance(live, T.FlowTable) and int(live.st[T.ST_KEY]) == k1
    assert carried(live, k2) == want
    # state saved before keys (st of 8 fields) goes on under the settings' key
    old = dict(T.FlowTable.from_bytes(r1.carry, *FlowSettings().table_args()).state_arrays())
    old["st"] = old["st"][: T.ST_KEY]
    restored = T.FlowTable.from_arrays(old, *FlowSettings().table_args(), sketch_key=k2)
    assert int(restored.st[T.ST_KEY]) == k2


def test_each_start_draws_its_own_key_and_tasks_carry_it() -> None:
    code = "from netmon_exporter import hash_key; print(hash_key.draw())"
    keys = {
        int(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3)
    }
    assert len(keys) == 3 and 0 not in keys
    before = hash_key.current()
    try:
        hash_key.use(2**64 - 5)  # any integer: its low 64 bits, as int64 holds them
        assert hash_key.current() == -5 and hash_key.word() == np.uint64(2**64 - 5)
        settings = executor.flow_settings(Config())
        assert settings.hash_key == -5  # what workers get ...
        assert "-5" not in repr(settings) and "hash_key" not in repr(settings)  # ... unlogged
    finally:
        hash_key.use(before)


@pytest.mark.parametrize("key", [0, 1, -(2**63), 2**63 - 1])
def test_any_64_bit_key_is_taken(tmp_path: Path, key: int) -> None:
    path = _tunnel(tmp_path / "t.pcap", [f"q{i}.tun.example" for i in range(20)])
    assert 14 <= _qnames(path, hash_key=key) <= 26


def _traffic(n: int, seed: int) -> FlowBatch:
    rng = np.random.default_rng(seed)
    v4 = rng.integers(0, 2**32, (n, 2), dtype=np.uint64)
    return make_batch(
        n,
        src_ip=str_to_addrs([str(ipaddress.ip_address(int(x))) for x in v4[:, 0]]),
        dst_ip=str_to_addrs([str(ipaddress.ip_address(int(x))) for x in v4[:, 1]]),
        src_port=rng.integers(1024, 65536, n),
        dst_port=rng.integers(1, 1024, n),
        protocol=rng.choice([6, 17], n),
        first_ts=1_700_000_000.0 + rng.random(n) * 60,
    )


def _hashes(flows: FlowBatch) -> dict[str, np.ndarray]:
    """Every hash computed over fields a sender controls, by its user."""
    from netmon_exporter.detectors.beacon import pair_hash
    from netmon_exporter.detectors.dns_tunnel import addr_hash
    from netmon_exporter.detectors.flood_rate import victim_keys
    from netmon_exporter.detectors.scan_probes import key_hash

    return {
        "scan key": key_hash(flows["src_ip"], flows["dst_port"]),
        "beacon pair": pair_hash(flows),
        "resolver": addr_hash(flows["src_ip"]),
        "flood victim": victim_keys(flows["dst_ip"], flows["dst_port"]),
        "sample group": group_keys(flows),
        "sample priority": priorities(flows),
    }


@pytest.mark.parametrize("n", [2000, HASH_KERNEL_ROWS])  # numpy, then the compiled pass
def test_every_hash_of_what_traffic_controls_takes_the_key(n: int) -> None:
    flows = _traffic(n, 1)
    before = hash_key.current()
    try:
        hash_key.use(0x0123_4567_89AB_CDEF)
        a, again = _hashes(flows), _hashes(flows)
        hash_key.use(-0x0123_4567_89AB_CDF0)
        b = _hashes(flows)
    finally:
        hash_key.use(before)
    for name in a:
        assert np.array_equal(a[name], again[name]), name  # the same key: the same values
        assert (a[name] != b[name]).mean() > 0.99, name  # another key: other values


def test_the_compiled_key_hash_equals_numpy_s_under_a_key() -> None:
    from netmon_exporter.detectors import scan_probes

    flows = _traffic(HASH_KERNEL_ROWS, 2)
    before = hash_key.current()
    try:
        hash_key.use(0x7777_0000_1234_5678)
        compiled = scan_probes.key_hash(flows["src_ip"], flows["dst_port"])
        small = [
            scan_probes.key_hash(flows["src_ip"][i : i + 1000], flows["dst_port"][i : i + 1000])
            for i in range(0, HASH_KERNEL_ROWS, 1000)
        ]
    finally:
        hash_key.use(before)
    assert np.array_equal(compiled, np.concatenate(small))


def test_flows_ranked_last_by_the_plain_hash_are_still_sampled_with_a_key() -> None:
    """A brute force against a busy server sits in a group the sample thins. Unkeyed, the
    attacker picks source ports whose flows rank last (priority above 0.95) and none of
    them is kept; keyed, they are kept at the group's rate like any other flow."""
    rng = np.random.default_rng(9)
    server, attacker = "192.0.2.80", "203.0.113.66"
    n_busy, n_attack = 20_000, 300
    ts = 1_700_000_000.0 + np.sort(rng.random(n_busy + n_attack)) * 60
    busy_src = [f"10.{i // 250 % 250}.{i % 250}.{i % 7 + 1}" for i in range(n_busy)]
    attack_ts = ts[n_busy:]
    candidates = make_batch(
        n_attack * 300,
        src_ip=str_to_addrs([attacker] * (n_attack * 300)),
        dst_ip=str_to_addrs([server] * (n_attack * 300)),
        src_port=np.tile(np.arange(30000, 30300), n_attack),
        dst_port=np.full(n_attack * 300, 22),
        protocol=np.full(n_attack * 300, 6),
        first_ts=np.repeat(attack_ts, 300),
    )
    before = hash_key.current()
    try:
        hash_key.use(0)
        p = priorities(candidates).reshape(n_attack, 300)
        best = 30000 + p.argmax(axis=1)  # what the attacker computes, offline, per connection
        assert (p.max(axis=1) > 0.95).all()
        flows = make_batch(
            n_busy + n_attack,
            src_ip=str_to_addrs(busy_src + [attacker] * n_attack),
            dst_ip=str_to_addrs([server] * (n_busy + n_attack)),
            src_port=np.concatenate([rng.integers(1024, 65536, n_busy), best]),
            dst_port=np.full(n_busy + n_attack, 22),
            protocol=np.full(n_busy + n_attack, 6),
            first_ts=np.concatenate([ts[:n_busy], attack_ts]),
            last_ts=np.concatenate([ts[:n_busy], attack_ts]) + 1.0,
        )

        def kept() -> int:
            sample = FlowSample(4000)
            sample.add(flows)
            rows = sample.result()
            assert len(rows) <= 4000 and rows.flows_total == n_busy + n_attack
            return int((np.asarray(addrs_to_str(rows["src_ip"])) == attacker).sum())

        assert kept() == 0  # unkeyed: the brute force is thinned away whole
        hash_key.use(0x3C6E_F372_FE94_F82B)
        got = kept()
    finally:
        hash_key.use(before)
    rate = 4000 / (n_busy + n_attack)
    assert n_attack * rate * 0.5 < got < n_attack * rate * 1.6, got


def test_a_worker_ranks_rows_with_the_key_of_its_task(tmp_path: Path) -> None:
    """Rows thinned in a worker and again in a window get the same priorities only if both
    hash with one key: the worker takes the daemon's from the task it runs."""
    from netmon_exporter.ingest.workers import Task, _run

    path = _tunnel(tmp_path / "t.pcap", [f"q{i}.tun.example" for i in range(5)])
    before = hash_key.current()
    try:
        for key in (0x1111_2222_3333_4444, -7):
            task = Task(1, str(path), FlowSettings(hash_key=key), None, None, True, 60.0)
            _run(process_file, task, streams=True)
            assert hash_key.current() == key
    finally:
        hash_key.use(before)
