"""Carried flows on disk: workers write and read them, the ledger holds only a reference.

The open flows a file of a rotation series leaves for the next one can be tens of
megabytes (UDP, DNS and ICMP flows stay open for the idle timeout). Sent through the
main process and stored in the ledger they cost a pickle and a pipe each way and a
SQLite write with fsync per file, all on the ingest thread. Instead, the worker that
ends a file writes its carry here (``<state.directory>/carry/``, written whole, then
renamed into place) and returns a small reference; the ledger commits that
reference with the file's ``done`` mark, exactly as it committed the state itself; the
worker of the next file reads the state directly. What the ledger references is the
carry; anything else in the directory is left over from an attempt that never committed
and is removed at start-up (:func:`sweep`) or once replaced (:func:`remove`).

A reference is bytes (it travels where the state used to): a marker line and JSON with
the file name, size, CRC-32 and what the file holds, checked on read. The state is
written as named arrays (a JSON header of names, dtypes, shapes, offsets and sizes, then
each array's bytes at a 64-byte boundary): no zip; the wide 2-D matrices (the flows'
accumulators and keys) packed column by column by :mod:`.carry_codec` (the same bits back,
about a third of the bytes), the others raw and read back as views of one buffer. Ledgers written before carry files held the state
itself; :func:`load` passes such state through unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import struct
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CARRY_DIR = "carry"
_MARK = b"netmon-carry-ref 1\n"
_NAME = re.compile(r"^[0-9]+-[0-9a-f]{16}\.carry$")
_TMP_PREFIX = ".tmp-"


class CarryError(Exception):
    """A referenced carry file is missing, unreadable or not what was written."""


_ARRAYS_MAGIC = b"NMCARRY1"
_ALIGN = 64
_MAX_HEADER = 1 << 20
_PACKED = "packed"  # an entry's form: carry_codec's column encoding (else: raw bytes)


@dataclass(frozen=True)
class CarryRef:
    name: str  # file name inside the carry directory
    size: int
    crc: int  # CRC-32 of the whole file
    form: str = "bytes"  # "bytes": opaque state; "arrays": named numpy arrays

    def encode(self) -> bytes:
        body = {"name": self.name, "size": self.size, "crc32": self.crc, "form": self.form}
        return _MARK + json.dumps(body, sort_keys=True).encode()


def directory(state_dir: Path | str) -> Path:
    return Path(state_dir) / CARRY_DIR


def is_ref(blob: bytes | None) -> bool:
    return blob is not None and blob.startswith(_MARK)


def parse(blob: bytes) -> CarryRef:
    """Decode a reference written by :meth:`CarryRef.encode` (CarryError if malformed)."""
    try:
        body = json.loads(blob[len(_MARK) :])
        ref = CarryRef(str(body["name"]), int(body["size"]), int(body["crc32"]), body["form"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CarryError(f"malformed carry reference: {exc}") from exc
    if not _NAME.match(ref.name) or ref.form not in ("bytes", "arrays"):
        raise CarryError(f"malformed carry reference: {ref.name!r}, {ref.form!r}")
    return ref


def save(carry_dir: Path | str, key: int, state: bytes) -> bytes:
    """Write opaque ``state`` (of ledger entry ``key``) durably; return its reference."""
    return _write(carry_dir, key, [state], "bytes")


def save_arrays(carry_dir: Path | str, key: int, arrays: Mapping[str, np.ndarray]) -> bytes:
    """Write named arrays (of ledger entry ``key``) durably; return their reference."""
    from . import carry_codec  # compiled: loaded only where carries are written or read

    entries: list[list[object]] = []
    pieces: list[bytes | memoryview] = []
    offset = 0
    for name, arr in arrays.items():
        data = np.ascontiguousarray(arr)
        form: list[str] = []
        if carry_codec.packable(data):
            parts = [p.reshape(-1).view(np.uint8).data for p in carry_codec.pack(data)]
            form = [_PACKED]
        else:
            parts = [data.reshape(-1).view(np.uint8).data]
        nbytes = sum(len(p) for p in parts)
        entries.append([name, data.dtype.str, list(data.shape), offset, nbytes, *form])
        pad = -nbytes % _ALIGN
        pieces += [*parts, b"\0" * pad]
        offset += nbytes + pad
    header = json.dumps(entries).encode()
    head = _ARRAYS_MAGIC + struct.pack("<I", len(header)) + header
    head += b"\0" * (-len(head) % _ALIGN)
    out: list[bytes | memoryview] = [head, *pieces]
    return _write(carry_dir, key, out, "arrays")


def _write(
    carry_dir: Path | str, key: int, pieces: Iterable[bytes | memoryview], form: str
) -> bytes:
    """Write ``pieces`` to a fresh file, then rename it into place.

    A fresh random name per attempt: a retried or redone file never overwrites the
    carry a committed ``done`` mark references. Not synced to disk: a process that
    dies (the daemon killed, a worker crashing) loses nothing the kernel was given, and
    what a power loss or kernel crash takes before writeback is caught by the size and
    CRC-32 the reference holds (the series' open flows are lost and counted, never a
    file). Syncing cost a worker ~4 ms per file of the series, on its critical path.
    """
    folder = Path(carry_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{int(key)}-{secrets.token_hex(8)}.carry"
    tmp = folder / f"{_TMP_PREFIX}{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    crc, size = 0, 0
    try:
        for piece in pieces:
            view = memoryview(piece)
            crc = zlib.crc32(view, crc)
            size += len(view)
            while view:
                view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    os.replace(tmp, folder / name)
    return CarryRef(name, size, crc, form).encode()


def load(carry_dir: Path | str | None, blob: bytes) -> bytes | dict[str, np.ndarray]:
    """Return the carried state ``blob`` stands for (state stored inline passes through)."""
    if not is_ref(blob):
        return blob
    ref = parse(blob)
    if carry_dir is None:
        raise CarryError(f"carry file {ref.name} referenced but no carry directory given")
    path = Path(carry_dir) / ref.name
    try:
        with open(path, "rb") as f:
            data = f.read(ref.size + 1)
    except OSError as exc:
        raise CarryError(f"cannot read carry file {path}: {exc.strerror or exc}") from exc
    if len(data) != ref.size or zlib.crc32(data) != ref.crc:
        raise CarryError(
            f"carry file {path} is not what was written ({len(data)} of {ref.size} bytes, "
            "or a different checksum)"
        )
    return _arrays(data, path) if ref.form == "arrays" else data


def _arrays(data: bytes, path: Path) -> dict[str, np.ndarray]:
    """The named arrays of a carry file (read-only views of ``data``)."""
    try:
        if not data.startswith(_ARRAYS_MAGIC):
            raise ValueError("no array header")
        (length,) = struct.unpack_from("<I", data, len(_ARRAYS_MAGIC))
        if length > _MAX_HEADER:
            raise ValueError("header too large")
        start = len(_ARRAYS_MAGIC) + 4
        entries = json.loads(data[start : start + length])
        base = start + length + (-(start + length) % _ALIGN)
        out = {}
        for name, dtype, shape, offset, nbytes, *form in entries:
            dt = np.dtype(dtype)
            if dt.hasobject or offset < 0 or nbytes < 0 or base + offset + nbytes > len(data):
                raise ValueError(f"array {name!r} out of range")
            if form == [_PACKED]:
                from . import carry_codec

                raw = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=base + offset)
                out[str(name)] = carry_codec.unpack(raw, dt, tuple(shape))
            elif form:
                raise ValueError(f"array {name!r} in an unknown form {form!r}")
            else:
                arr = np.frombuffer(
                    data, dtype=dt, count=nbytes // max(dt.itemsize, 1), offset=base + offset
                )
                out[str(name)] = arr.reshape(shape)
        return out
    except (ValueError, TypeError, struct.error) as exc:
        raise CarryError(f"carry file {path} is malformed: {exc}") from exc


def remove(carry_dir: Path | str | None, blob: bytes | None) -> None:
    """Delete the file ``blob`` references (once the ledger no longer does); never raises."""
    if carry_dir is None or blob is None or not is_ref(blob):
        return
    with contextlib.suppress(CarryError, OSError):
        (Path(carry_dir) / parse(blob).name).unlink()


class Remover:
    """Removes replaced carry files on a thread of its own.

    Unlinking a file of megabytes takes the filesystem milliseconds, which the
    scheduler thread should not spend between two files of a series. A file still
    queued when the process dies is swept at the next start (nothing references it).
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Path | str | None, bytes | None] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def remove(self, carry_dir: Path | str | None, blob: bytes | None) -> None:
        """Remove the file ``blob`` references soon (see :func:`remove`)."""
        if carry_dir is None or not is_ref(blob):
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="carry-remover", daemon=True)
                self._thread.start()
        self._queue.put((carry_dir, blob))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            remove(*item)

    def close(self, timeout: float = 5.0) -> None:
        """Finish the removals queued so far (within ``timeout``)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)


def sweep(carry_dir: Path | str, referenced: set[str], older_than: float) -> int:
    """Remove carry files no ledger row references, written before ``older_than`` (epoch s).

    Only files older than the daemon's start are candidates: a worker of this run may
    have written a carry whose ``done`` mark is about to be committed.
    """
    folder = Path(carry_dir)
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if name in referenced or not (_NAME.match(name) or name.startswith(_TMP_PREFIX)):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_mtime < older_than:
                os.unlink(entry.path)
                removed += 1
    return removed


def referenced_names(blobs: list[bytes]) -> set[str]:
    """The carry file names the ledger's stored carries reference."""
    names = set()
    for blob in blobs:
        if is_ref(blob):
            with contextlib.suppress(CarryError):
                names.add(parse(blob).name)
    return names
