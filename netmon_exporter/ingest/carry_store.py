"""Carried flows on disk: workers write and read them, the ledger holds only a reference.

The open flows a file of a rotation series leaves for the next one can be tens of
megabytes (UDP, DNS and ICMP flows stay open for the idle timeout). Sent through the
main process and stored in the ledger they cost a pickle and a pipe each way and a
SQLite write with fsync per file, all on the ingest thread. Instead, the worker that
ends a file writes its carry here (``<state.directory>/carry/``, written whole, synced,
then renamed into place) and returns a small reference; the ledger commits that
reference with the file's ``done`` mark, exactly as it committed the state itself; the
worker of the next file reads the state directly. What the ledger references is the
carry; anything else in the directory is left over from an attempt that never committed
and is removed at start-up (:func:`sweep`) or once replaced (:func:`remove`).

A reference is bytes (it travels where the state used to): a marker line and JSON with
the file name, size and BLAKE2b digest, checked on read. Ledgers written before carry
files held the state itself; :func:`load` passes such state through unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

CARRY_DIR = "carry"
_MARK = b"netmon-carry-ref 1\n"
_NAME = re.compile(r"^[0-9]+-[0-9a-f]{16}\.carry$")
_TMP_PREFIX = ".tmp-"


class CarryError(Exception):
    """A referenced carry file is missing, unreadable or not what was written."""


@dataclass(frozen=True)
class CarryRef:
    name: str  # file name inside the carry directory
    size: int
    digest: str  # BLAKE2b-128, hex

    def encode(self) -> bytes:
        body = {"name": self.name, "size": self.size, "digest": self.digest}
        return _MARK + json.dumps(body, sort_keys=True).encode()


def directory(state_dir: Path | str) -> Path:
    return Path(state_dir) / CARRY_DIR


def is_ref(blob: bytes | None) -> bool:
    return blob is not None and blob.startswith(_MARK)


def parse(blob: bytes) -> CarryRef:
    """Decode a reference written by :meth:`CarryRef.encode` (CarryError if malformed)."""
    try:
        body = json.loads(blob[len(_MARK) :])
        ref = CarryRef(str(body["name"]), int(body["size"]), str(body["digest"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CarryError(f"malformed carry reference: {exc}") from exc
    if not _NAME.match(ref.name):
        raise CarryError(f"malformed carry reference: file name {ref.name!r}")
    return ref


def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def save(carry_dir: Path | str, key: int, state: bytes) -> bytes:
    """Write ``state`` (of ledger entry ``key``) durably under a fresh name; return its reference.

    A fresh random name per attempt: a retried or redone file never overwrites the
    carry a committed ``done`` mark references.
    """
    folder = Path(carry_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{int(key)}-{secrets.token_hex(8)}.carry"
    tmp = folder / f"{_TMP_PREFIX}{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        view = memoryview(state)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    os.replace(tmp, folder / name)
    _sync_dir(folder)
    return CarryRef(name, len(state), _digest(state)).encode()


def load(carry_dir: Path | str | None, blob: bytes) -> bytes:
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
    if len(data) != ref.size or _digest(data) != ref.digest:
        raise CarryError(
            f"carry file {path} is not what was written ({len(data)} of {ref.size} bytes, "
            "or a different digest)"
        )
    return data


def remove(carry_dir: Path | str | None, blob: bytes | None) -> None:
    """Delete the file ``blob`` references (once the ledger no longer does); never raises."""
    if carry_dir is None or blob is None or not is_ref(blob):
        return
    with contextlib.suppress(CarryError, OSError):
        (Path(carry_dir) / parse(blob).name).unlink()


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


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
