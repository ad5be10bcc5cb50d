"""Run the parser once inside the worker fork server, so forked workers start warm.

Imported only as a fork-server preload module (see ``workers.py``): the first
call into the compiled (numba) parsing code costs about half a second per
process; doing it once here means every worker, including one that replaces a
killed worker, inherits the compiled code and meets ``file_timeout_seconds``
from its first file. Failures are ignored: a cold worker is only slower.

``python -m netmon_exporter.ingest.warm_pipeline`` compiles every kernel into numba's
cache ahead of time (``make`` does it after installing, the container image when it is
built), so no process pays the 30-60 s of a first compile; failures are shown then. It
then builds the kernels it met into extension modules (``aot_build.py``), which
processes run without importing numba at all (``compiled.py``).
"""

from __future__ import annotations

import contextlib
import struct
import tempfile
from pathlib import Path

# A DNS query for "a.b" (header, question): the per-query statistics are compiled too.
_QUERY = (
    struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x01a\x01b\x00" + struct.pack("!HH", 1, 1)
)


def _tiny_capture() -> bytes:
    """A DNS query (a seed), a TCP SYN, and a query asked three times (a flow with a row
    and DNS statistics), a second apart."""
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    records = []
    query = struct.pack("!HHHH", 5353, 53, 8 + len(_QUERY), 0) + _QUERY
    asked_again = struct.pack("!HHHH", 5354, 53, 8 + len(_QUERY), 0) + _QUERY
    for k, (proto, l4) in enumerate(
        (
            (17, query),
            (6, struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02, 1024, 0, 0)),
            (17, asked_again),
            (17, asked_again),
            (17, asked_again),
        )
    ):
        ip = (
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(l4),
                0,
                0,
                64,
                proto,
                0,
                b"\x0a\x00\x00\x01",
                b"\x0a\x00\x00\x02",
            )
            + l4
        )
        frame = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00" + ip
        ts = 1_700_000_000 + k  # a second apart: a 1-s interim slice cuts between them
        records.append(struct.pack("<IIII", ts, 0, len(frame), len(frame)) + frame)
    return header + b"".join(records)


def _as_pcapng(pcap: bytes) -> bytes:
    """The same packets as a pcapng file (section header, interface, enhanced packets)."""

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    out.append(block(1, struct.pack("<HHI", 1, 0, 65535)))  # Ethernet, microseconds
    at = 24
    while at + 16 <= len(pcap):
        sec, usec, incl, orig = struct.unpack_from("<IIII", pcap, at)
        us = sec * 1_000_000 + usec
        head = struct.pack("<IIIII", 0, us >> 32, us & 0xFFFFFFFF, incl, orig)
        out.append(block(6, head + pcap[at + 16 : at + 16 + incl]))
        at += 16 + incl
    return b"".join(out)


def warm_up() -> None:
    """Parse a tiny capture, both finishing its flows and carrying them (inline and
    through a carry file), and write and read back their flow CSVs (whole flows and
    slices)."""
    from ..flows.flow_csv import read_flow_csv
    from ..flows.flow_table import FlowTable
    from ..pipeline import FlowSettings, finish_carry, process_file
    from . import carry_store

    with tempfile.TemporaryDirectory(prefix="netmon-warmup-") as tmp:
        name = Path(tmp) / "warm.pcap"
        name.write_bytes(_tiny_capture())
        settings = FlowSettings()
        process_file(name, settings, csv_path=Path(tmp) / "flows.csv")
        process_file(name, FlowSettings(max_open_flows=1))  # eviction, compaction
        ng = Path(tmp) / "warm.pcapng"
        ng.write_bytes(_as_pcapng(_tiny_capture()))
        process_file(ng, settings)
        sliced = FlowSettings(interim_seconds=1.0, csv_interim=True)  # interim records
        process_file(name, sliced, csv_path=Path(tmp) / "slices.csv")
        for _ in read_flow_csv(Path(tmp) / "slices.csv"):
            pass
        carried = process_file(name, settings, final=False).carry
        if carried:
            finish_carry(carried, settings)
            # a worker's carry file: the column encoding both ways (float and int columns)
            table = FlowTable.from_bytes(carried, *settings.table_args())
            carry_store.load(tmp, carry_store.save_arrays(tmp, 1, table.state_arrays()))


def warm_detectors() -> None:
    """Compile the kernels of the daemon's main process (not of workers): only when run
    as a program. The scan detectors' contact merge: the store takes the compiled path
    from its second update on, with the same argument types as a store of a million rows
    (a read-only store, writable new rows). The windows' row packing: float32 and
    float64 columns in every form (see :func:`warm_row_pack`). The DNS tunnel
    detector's description of query names in bulk; the scan detectors' key hashes."""
    import numpy as np

    from ..detectors.catalog import DnsTunnelConfig
    from ..detectors.dns_tunnel import DnsTunnelDetector
    from ..detectors.hash_kernels import warm as warm_key_hashes
    from ..detectors.scan_probes import COUNT, KINDS, ContactStore
    from ..flow_schema import str_to_addrs

    warm_row_pack()
    warm_key_hashes()  # keys of many rows
    DnsTunnelDetector(DnsTunnelConfig())._describer.describe(["a.b.example.co.uk"])  # in bulk

    # the stores' own dtypes: int32 counters, float64 times and content, int16 kinds
    store = ContactStore(60.0, 10, sums=("n",), maxes=("content",), ors=("kinds",))
    store.merge_kernel_rows = 1
    for t in (0.0, 1.0):
        two = str_to_addrs(["10.0.0.1", "10.0.0.2"])
        times = np.array([t, t])
        store.update(
            {
                "src": two,
                "dst": two[::-1],
                "svc": np.array([1, 2]),
                "first": times,
                "last": times,
                "n": np.ones(2, COUNT),
                "content": np.zeros(2),
                "kinds": np.ones(2, KINDS),
            },
            t,
        )


def warm_row_pack() -> None:
    """Pack and unpack float32 and float64 columns in every form (compiled and cached)."""
    from ..row_pack import exercise

    exercise()


def main() -> None:
    """Compile every kernel into numba's cache, then build them ahead of time."""
    import os
    import time

    from .. import aot_build, compiled

    os.environ[compiled.ENV] = "jit"  # warm numba's cache: it serves what the build lacks
    t0 = time.perf_counter()
    warm_up()
    warm_detectors()
    print(
        f"flow engine and detector kernels compiled and cached in {time.perf_counter() - t0:.1f} s"
    )
    signatures = aot_build.collect()
    if not aot_build.missing(signatures):
        print("kernels built ahead of time: up to date")
        return
    t0 = time.perf_counter()
    try:
        report = aot_build.build_in_subprocess(signatures)
    except Exception as exc:  # numba's JIT still does the work, only starts slower
        print(f"kernels not built ahead of time; processes will use numba's JIT: {exc}")
        return
    print(report)
    print(f"kernels built ahead of time in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
else:
    with contextlib.suppress(Exception):  # a failing warm-up must not take the fork server down
        warm_up()
